"""The gateway's ASGI app: routes, CORS, errors as JSON, and a lifespan that owns the meshes.

    app = create_app(MeshConfig(servers=("nats://127.0.0.1:4222",), instance_id="gateway"))
    # any ASGI server runs it: the lifespan opens the mesh and closes it (drain, then close)

With ``tokens`` (``TokenTable.load``) every caller needs a bearer token and acts as its identity,
through that identity's own ``Mesh``; without, everyone shares the one mesh (development on
loopback). ``options.console`` serves a directory at ``/`` (the web console), after the API routes;
``CONSOLE_DIR`` is the console shipped in the package (``nxs gateway`` serves it by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.config import DEFAULT_URL, MeshConfig
from nxs_mesh.gateway.auth import TokenTable
from nxs_mesh.gateway.calls import cancel_task, get_task, post_command, post_task
from nxs_mesh.gateway.dlq import get_dead_letters, replay_dead_letter_route
from nxs_mesh.gateway.errors import exception_handlers
from nxs_mesh.gateway.files import delete_file, get_file, list_files, put_file
from nxs_mesh.gateway.messages import get_messages, post_message
from nxs_mesh.gateway.openapi import a2a_installed, openapi_document
from nxs_mesh.gateway.outputs import json_response
from nxs_mesh.gateway.runtime import Gateway, GatewayOptions, TaskStatus
from nxs_mesh.gateway.stream import get_stream
from nxs_mesh.gateway.views import get_alerts, get_health, get_nodes

if TYPE_CHECKING:
    from nxs_mesh.gateway.a2a import A2AMount

__all__ = ["API_ROUTES", "CONSOLE_DIR", "create_app"]

#: The web console shipped in the package: static files, no build step (``gateway/console/``).
CONSOLE_DIR = str(Path(__file__).with_name("console"))

# Headers a browser on another origin may send and read (CORS).
_ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID")
_EXPOSE_HEADERS = ("Location", "ETag", "Nxs-Digest", "Content-Length")


async def _openapi(request: Request) -> Response:
    return json_response(openapi_document())


API_ROUTES: tuple[Route, ...] = (
    Route("/v1/messages", post_message, methods=["POST"]),
    Route("/v1/messages", get_messages, methods=["GET"]),
    Route("/v1/stream", get_stream, methods=["GET"]),
    Route("/v1/nodes", get_nodes, methods=["GET"]),
    Route("/v1/nodes/{node}/commands/{command}", post_command, methods=["POST"]),
    Route("/v1/tasks", post_task, methods=["POST"]),
    Route("/v1/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/v1/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{name:path}", put_file, methods=["PUT"]),
    Route("/v1/files/{name:path}", get_file, methods=["GET"]),
    Route("/v1/files/{name:path}", delete_file, methods=["DELETE"]),
    Route("/v1/alerts", get_alerts, methods=["GET"]),
    Route("/v1/dlq", get_dead_letters, methods=["GET"]),
    Route("/v1/dlq/{dlq_id}/replay", replay_dead_letter_route, methods=["POST"]),
    Route("/v1/health", get_health, methods=["GET"]),
    Route("/openapi.json", _openapi, methods=["GET"]),
)


def _a2a_mount() -> A2AMount | None:
    """``/a2a/<agent>``: the A2A binding (``gateway.a2a``), when the ``a2a`` extra is installed."""
    if not a2a_installed():
        return None
    from nxs_mesh.gateway.a2a import A2AMount  # noqa: PLC0415 - the optional a2a-sdk

    return A2AMount()


def create_app(
    mesh_or_config: Mesh | MeshConfig | str | None = None,
    *,
    tokens: TokenTable | None = None,
    options: GatewayOptions | None = None,
    task_status: TaskStatus | None = None,
) -> Starlette:
    """The gateway app over a ``Mesh`` (used as is; closed only if the gateway had to open it), a
    ``MeshConfig``, or a server URL. With ``tokens``, each identity's mesh comes from the tokens file
    instead. ``task_status`` replaces how ``GET /v1/tasks/{id}`` reads a task (``gateway.calls``)."""
    if mesh_or_config is None or isinstance(mesh_or_config, str):
        source: Mesh | MeshConfig = MeshConfig(servers=(mesh_or_config or DEFAULT_URL,), instance_id="gateway")
    else:
        source = mesh_or_config
    opts = options or GatewayOptions()
    gateway = Gateway(source, tokens=tokens, options=opts, task_status=task_status)
    a2a = _a2a_mount()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            if a2a is not None:
                await a2a.aclose()  # its executors end while the meshes they wait on are still open
            await gateway.stop()

    routes: list[BaseRoute] = list(API_ROUTES)
    if a2a is not None:
        routes.append(Mount("/a2a", app=a2a, name="a2a"))
    if opts.console is not None:
        routes.append(Mount("/", app=StaticFiles(directory=opts.console, html=True), name="console"))
    middleware = [Middleware(CORSMiddleware, allow_origins=list(opts.cors), allow_methods=["GET", "POST", "PUT", "DELETE"],
                             allow_headers=list(_ALLOW_HEADERS), expose_headers=list(_EXPOSE_HEADERS),
                             max_age=600)] if opts.cors else []
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=exception_handlers(), lifespan=lifespan)
    app.state.gateway = gateway
    return app
