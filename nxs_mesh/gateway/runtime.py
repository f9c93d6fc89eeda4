"""The running gateway behind the routes: its options, the ``Mesh`` of each identity, its SSE feeds.

``start()`` opens the meshes (one per identity of the tokens file, or the one given), ``stop()`` ends
every SSE feed, then closes the meshes it opened (drain, then close). The app's lifespan calls both;
``GatewayServer`` calls ``start()`` before it listens, so a mesh that cannot be reached is a clear
error instead of a server that answers 503.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.client.mesh import Mesh, MeshState
from nxs_mesh.config import MeshConfig
from nxs_mesh.gateway.auth import TokenTable, bearer_token
from nxs_mesh.gateway.errors import ApiError
from nxs_mesh.wire.errors import ClosedError

__all__ = ["Gateway", "GatewayOptions", "TaskStatus", "gateway_of"]

log = logging.getLogger("nxs_mesh.gateway")

#: ``(mesh, task_id) -> {"task_id", "state", ...}``: how ``GET /v1/tasks/{id}`` reads a task
#: (``node.task_states.task_status`` has this shape; see ``gateway.calls``).
TaskStatus = Callable[[Mesh, str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class GatewayOptions:
    """What the gateway allows. ``max_body`` bounds JSON bodies, ``max_file`` file uploads (None: no
    bound; they are streamed either way). ``file_chunk``: the Object Store chunk size of uploads, half the
    store's default because a put keeps 64 chunks in flight and a gateway serves many uploads at once
    (4 MiB each instead of 8). ``console``: a directory served at ``/`` (the web console)."""

    cors: tuple[str, ...] = ()
    max_body: int = 1 << 20
    max_file: int | None = None
    file_chunk: int = 64 * 1024
    command_timeout: float = 10.0
    max_timeout: float = 300.0
    sse_ping: float = 15.0
    console: str | None = None


class GatewayState(enum.StrEnum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Gateway:
    """The meshes and feeds of one gateway app (``app.state.gateway``)."""

    def __init__(self, source: Mesh | MeshConfig, *, tokens: TokenTable | None = None,
                 options: GatewayOptions | None = None, task_status: TaskStatus | None = None) -> None:
        self.options = options or GatewayOptions()
        self.tokens = tokens
        self._source = source
        self._meshes: dict[str, Mesh] = {}
        self._owned: list[Mesh] = []
        self.feeds = Supervisor("gateway feeds")
        self.active_feeds = 0  # SSE responses streaming now
        self.state = GatewayState.UNOPENED
        self.task_status = task_status

    def __repr__(self) -> str:
        who = f"{len(self._meshes)} identities" if self.tokens is not None else "open, no tokens"
        return f"<Gateway {self.state.name} [{who}, {self.active_feeds} feeds]>"

    @property
    def meshes(self) -> dict[str, Mesh]:
        return dict(self._meshes)

    async def start(self) -> None:
        """Open the meshes (idempotent). One that cannot connect closes those already open and raises."""
        if self.state is GatewayState.OPEN:
            return
        if self.state is GatewayState.CLOSED:
            raise ClosedError("this gateway was stopped; create a new app")
        try:
            if self.tokens is not None:
                for name, ident in self.tokens.identities.items():
                    self._meshes[name] = await self._open(Mesh(ident.config))
            elif isinstance(self._source, Mesh):
                mesh = self._source
                self._meshes[mesh.config.instance_id] = mesh if mesh.state is MeshState.OPEN else await self._open(mesh)
            else:
                mesh = await self._open(Mesh(self._source))
                self._meshes[mesh.config.instance_id] = mesh
        except BaseException:
            await self._close_owned()
            raise
        self.state = GatewayState.OPEN
        log.info("gateway open: %s", ", ".join(f"{n}={m.config.instance_id}" for n, m in self._meshes.items()))

    async def _open(self, mesh: Mesh) -> Mesh:
        await mesh.connect()
        self._owned.append(mesh)
        return mesh

    async def stop(self) -> None:
        """End the SSE feeds, then drain and close the meshes this gateway opened (never a given one)."""
        if self.state is GatewayState.CLOSED:
            return
        self.state = GatewayState.CLOSED
        await self.feeds.stop(timeout=0)  # a feed never ends by itself: cancel each now
        await self._close_owned()

    async def _close_owned(self) -> None:
        owned, self._owned = self._owned, []
        for mesh in reversed(owned):
            try:
                await mesh.close()
            except Exception:  # noqa: BLE001 - closing the others matters more than this one's failure
                log.exception("closing %r", mesh)

    def mesh_for(self, conn: HTTPConnection) -> tuple[Mesh, str]:
        """The caller's mesh and identity name: from its bearer token (401 without a known one), or
        the one mesh when the gateway has no tokens file."""
        if self.state is not GatewayState.OPEN:
            raise ApiError(503, f"the gateway is {self.state.value}")
        if self.tokens is None:
            name, mesh = next(iter(self._meshes.items()))
        else:
            ident = self.tokens.identify(bearer_token(conn.headers, _query_token(conn)))
            if ident is None:
                raise ApiError(401, "unknown bearer token", field="Authorization",
                               headers={"WWW-Authenticate": 'Bearer realm="nxs", error="invalid_token"'})
            name, mesh = ident.name, self._meshes[ident.name]
        if not mesh.is_connected:  # say so now rather than after a publish's timeout
            raise ApiError(503, f"the gateway's connection to the mesh ({name}) is down; it keeps reconnecting")
        return mesh, name


#: Where a token may come as ``?access_token=`` (RFC 6750 section 2.3): a browser's ``EventSource`` cannot
#: send an Authorization header. Nowhere else: a token in a URL ends up in logs and histories.
QUERY_TOKEN_PATHS: frozenset[str] = frozenset({"/v1/stream"})


def _query_token(conn: HTTPConnection) -> str | None:
    return conn.query_params.get("access_token") if conn.url.path in QUERY_TOKEN_PATHS else None


def gateway_of(conn: HTTPConnection) -> Gateway:
    gw = conn.app.state.gateway
    assert isinstance(gw, Gateway)
    return gw
