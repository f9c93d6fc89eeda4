"""The HTTP gateway (issue 13 part 3): HTTP and Server-Sent Events over the mesh, a thin adapter over
``Mesh`` (never a second implementation of delivery). Needs the ``gateway`` extra (Starlette, uvicorn,
sse-starlette); ``nxs_mesh`` itself never imports this package.

    from nxs_mesh.gateway import GatewayServer, create_app

    async with GatewayServer(create_app("nats://127.0.0.1:4222"), port=8080) as server:
        await server.wait()

Routes, auth and errors: ``gateway.app`` (and ``/openapi.json``); tokens: ``gateway.auth``.
"""

from nxs_mesh.gateway.app import API_ROUTES, CONSOLE_DIR, create_app
from nxs_mesh.gateway.auth import Identity, TokenTable
from nxs_mesh.gateway.errors import ApiError
from nxs_mesh.gateway.runtime import Gateway, GatewayOptions, TaskStatus
from nxs_mesh.gateway.server import GatewayServer

__all__ = ["API_ROUTES", "CONSOLE_DIR", "ApiError", "Gateway", "GatewayOptions", "GatewayServer", "Identity",
           "TaskStatus", "TokenTable", "create_app"]
