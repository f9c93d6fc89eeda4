"""Run the gateway app with uvicorn inside the current event loop: ``start()`` returns once it listens.

    async with GatewayServer(create_app(config), port=0) as server:   # port 0: a free port
        print(server.url)                                              # http://127.0.0.1:41234

``start()`` opens the gateway's meshes first, so an unreachable mesh raises its ``MeshError`` here
rather than inside uvicorn's startup. ``stop()`` ends the SSE feeds (their responses complete), then
lets uvicorn finish the requests in flight and run the lifespan's shutdown, which closes the meshes.
Signals are the owner's business (``nxs gateway`` turns SIGINT/SIGTERM into ``stop()``), so the same
server runs in a CLI, a test, or next to an agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from nxs_mesh.aio.waiting import wait_until
from nxs_mesh.gateway.runtime import Gateway
from nxs_mesh.wire.errors import ServerError

__all__ = ["GatewayServer"]

log = logging.getLogger("nxs_mesh.gateway")


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # GatewayServer's owner handles signals; uvicorn would re-raise them after shutdown


class GatewayServer:
    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 8080, *, log_level: str = "warning",
                 access_log: bool = False, graceful: int = 5) -> None:
        self.app, self.host, self.port = app, host, port
        self._config = uvicorn.Config(app, lifespan="on", log_level=log_level, access_log=access_log,
                                      timeout_graceful_shutdown=graceful, server_header=False)
        self._server = _Uvicorn(self._config)
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "listening" if self._server.started and self._task and not self._task.done() else "stopped"
        return f"<GatewayServer {self.url} {state} {self.gateway!r}>"

    @property
    def gateway(self) -> Gateway:
        gw = self.app.state.gateway
        assert isinstance(gw, Gateway)
        return gw

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without it a
        # keep-alive request waits ~40 ms for Nagle + delayed ACK (the response head and body are two writes).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ServerError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc} "
                              "(choose another address with --listen HOST:PORT)") from None
        self.port = sock.getsockname()[1]
        sock.set_inheritable(True)
        return sock

    async def start(self, timeout: float = 30.0) -> GatewayServer:
        """Open the meshes, bind, serve; returns once uvicorn accepts connections."""
        await self.gateway.start()
        try:
            sock = self._bind()
        except BaseException:
            await self.gateway.stop()
            raise
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"nxs:gateway {self.url}")
        task = self._task
        try:
            await wait_until(lambda: self._server.started or task.done(), timeout, "the gateway to listen")
        except BaseException:
            await self.stop()
            raise
        if not self._server.started:
            await self.stop()
            raise ServerError(f"the gateway on {self.url} did not start (see its log)")
        log.info("gateway listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """End the feeds, finish the requests in flight, close the meshes (idempotent)."""
        task, self._task = self._task, None
        await self.gateway.feeds.stop(timeout=0)
        if task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await task
        await self.gateway.stop()  # when uvicorn never ran its lifespan's shutdown

    async def wait(self) -> None:
        """Until the server ends (``stop()`` from elsewhere, or a failure)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> GatewayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
