"""The client's one connection to the mesh: a nats-py client, its JetStream context and the lean
publisher, behind the few operations the layers above need. Nothing above ``transport`` sees nats-py.

    link = await Link.open(config)
    await link.publish("nxs.heartbeat.n1", data)              # core publish (no ack)
    sub = await link.subscribe("nxs.heartbeat.>", on_message)   # on_message(subject, data, headers)
    await link.close()

A connection that nats-py closes for good (the server sent ``-ERR``, e.g. a message over
``max_payload``) is reopened: a new client on the same servers, the publisher and every plain
subscription made anew, ``generation`` incremented; loops bound to the old client (pull consumers)
notice it and are restarted by their supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.connection import ReconnectPolicy, connect
from nxs_mesh.transport.denials import Denials
from nxs_mesh.transport.path_probe import PathProbe, bound_unacked
from nxs_mesh.transport.publisher import JsPublisher
from nxs_mesh.transport.translate import translate_nats_errors
from nxs_mesh.wire.errors import ClosedError, MeshError, NotConnectedError

__all__ = ["Inbound", "Link", "ReplyWaiter", "ServerInfo", "server_info_of"]

log = logging.getLogger("nxs_mesh.transport.link")

#: A plain subscription's callback: subject, body, headers (None when there are none).
Inbound = Callable[[str, bytes, "dict[str, str] | None"], Awaitable[None]]


@dataclass(frozen=True)
class ServerInfo:
    """What the connected server said of itself in its INFO."""

    version: str
    name: str
    cluster: str | None
    connect_urls: tuple[str, ...]
    max_payload: int
    jetstream: bool
    auth_required: bool = False
    tls_verify: bool = False  # the server requires client certificates


def server_info_of(nc: Client) -> ServerInfo:
    """The server's INFO. nats-py keeps it only in the private ``_server_info`` (no public accessor);
    this is the one place that reads it, and ``tests/test_layers.py`` fails if nats-py renames it."""
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    return ServerInfo(
        version=str(info.get("version", "?")), name=str(info.get("server_name", "")),
        cluster=info.get("cluster") or None, connect_urls=tuple(sorted(set(info.get("connect_urls") or []))),
        max_payload=int(info.get("max_payload") or nc.max_payload or 1024 * 1024),
        jetstream=bool(info.get("jetstream", False)),
        auth_required=bool(info.get("auth_required", False)),
        tls_verify=bool(info.get("tls_verify", False)),
    )


class _Sub:
    """A plain subscription that survives a reopen (the link subscribes it again on the new client)."""

    def __init__(self, link: Link, subject: str, cb: Inbound) -> None:
        self._link, self.subject, self._cb = link, subject, cb
        self._sub: Subscription | None = None

    async def attach(self, nc: Client) -> None:
        cb = self._cb

        async def deliver(msg: Msg) -> None:
            await cb(msg.subject, msg.data, msg.headers)

        with translate_nats_errors(f"subscribe {self.subject}"):
            self._sub = await nc.subscribe(self.subject, cb=deliver)

    async def unsubscribe(self) -> None:
        self._link._subs.discard(self)  # noqa: SLF001 - the link's own helper
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # closing: the connection may be gone already
                await sub.unsubscribe()


class ReplyWaiter:
    """One awaited reply on a subject (subscribed before the request goes out, so none is missed)."""

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    async def next(self, timeout: float) -> bytes:
        """The reply's body; ``TimeoutError`` after ``timeout`` seconds."""
        return (await self.next_message(timeout))[0]

    async def next_message(self, timeout: float) -> tuple[bytes, dict[str, str] | None]:
        """The reply's body and headers; ``TimeoutError`` after ``timeout`` seconds."""
        try:
            msg = await self._sub.next_msg(timeout=timeout)
        except TimeoutError:
            raise
        except Exception as exc:  # translated, never swallowed
            with translate_nats_errors("reply"):
                raise exc
        return bytes(msg.data), msg.headers

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # the connection may be closing
            await self._sub.unsubscribe()


class Link:
    """One open connection (reopened if it closes under us); made by ``Link.open``."""

    def __init__(self, config: MeshConfig, policy: ReconnectPolicy,
                 on_reconnected: Callable[[], Awaitable[None]] | None) -> None:
        self.config = config
        self._policy = policy
        self._on_reconnected = on_reconnected
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pub: JsPublisher | None = None
        self._subs: set[_Sub] = set()
        self._closing = False
        self._reopened = asyncio.Event()
        self.generation = 0
        self.reopens = 0
        self._sup = Supervisor(f"link {config.instance_id}")
        self.denials = Denials()
        # With an identity the server may refuse operations: requests then race the refusal (a few
        # microseconds each), so a refused one fails at once naming its subject instead of timing out.
        self._checks_permissions = bool(config.secure or config.nkey_seed or config.creds or config.user)
        # Back from the relay once a direct server answers (the probe reads INFOs through us: one place).
        self.path_probe = PathProbe(self, lambda nc: server_info_of(nc).jetstream)

    def __repr__(self) -> str:
        state = "CLOSED" if self._closing else ("CONNECTED" if self.is_connected else "DISCONNECTED")
        return f"<Link {self.config.instance_id} {state} [server {self.connected_url or '-'}, gen {self.generation}]>"

    @classmethod
    async def open(cls, config: MeshConfig, *, policy: ReconnectPolicy | None = None,
                   on_reconnected: Callable[[], Awaitable[None]] | None = None) -> Link:
        link = cls(config, policy or ReconnectPolicy(), on_reconnected)
        await link._connect()
        if len(config.servers) > 1:
            link._sup.keep("path probe", link.path_probe.run)
        return link

    async def _connect(self) -> None:
        nc = await connect(self.config, policy=self._policy, reconnected_cb=self._reconnected,
                           closed_cb=self._closed, error_cb=self._on_error)
        if self._checks_permissions:
            self.denials.guard_requests(nc)
        bound_unacked(nc)  # a silent direct link is left in seconds, not after 15 s of pings
        pub = JsPublisher(nc, denials=self.denials)
        try:
            with translate_nats_errors("connect"):
                await pub.start()
            for sub in list(self._subs):
                await sub.attach(nc)
        except BaseException:
            with contextlib.suppress(Exception):  # a half-open client: close it whatever it says, re-raise
                await nc.close()
            raise
        self._nc, self._js, self._pub = nc, nc.jetstream(timeout=5.0), pub
        self.generation += 1

    async def _on_error(self, exc: Exception) -> None:
        self.denials.note(str(exc))

    async def _reconnected(self) -> None:
        if self._nc is not None:
            bound_unacked(self._nc)  # a new socket
        if self._on_reconnected is not None:
            await self._on_reconnected()

    async def _closed(self) -> None:
        if self._closing:
            return
        log.error("connection of %s closed by nats-py (%s); reopening", self.config.instance_id,
                  getattr(self._nc, "last_error", None))
        self._sup.spawn("reopen", self._reopen())

    async def _reopen(self) -> None:
        old = self._pub
        if old is not None:
            await old.close()
        attempt = 0
        while not self._closing:
            try:
                await self._connect()
                self.reopens += 1
                log.warning("connection of %s reopened (generation %d)", self.config.instance_id, self.generation)
                self._reopened.set()
                self._reopened = asyncio.Event()
                if self._on_reconnected is not None:
                    await self._on_reconnected()
                return
            except MeshError as exc:
                attempt += 1
                delay = backoff_delay(attempt, base=0.2, cap=5.0)
                log.warning("reopen of %s failed (%s); again in %.1fs", self.config.instance_id, exc, delay)
                await asyncio.sleep(delay)  # sleep-ok: backoff between reconnects

    async def close(self) -> None:
        """Drain (5 s at most, shielded from cancellation) and close; pending publishes fail with ClosedError."""
        if self._closing:
            return
        self._closing = True
        await self._sup.stop(timeout=0)
        pub, self._pub = self._pub, None
        if pub is not None:
            await pub.close()
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):  # closing: whatever the server says, we are done
                await asyncio.shield(asyncio.wait_for(nc.drain(), 5))
            with contextlib.suppress(Exception):  # closing: whatever the server says, we are done
                await nc.close()

    # -- state ---------------------------------------------------------------------------------------
    @property
    def nc(self) -> Client:
        """The live nats-py client (transport modules only)."""
        if self._closing:
            raise ClosedError("this Mesh is closed")
        if self._nc is None or self._nc.is_closed:
            raise NotConnectedError("the connection is being reopened")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        self.nc  # noqa: B018 - raises the right error
        assert self._js is not None
        return self._js

    @property
    def publisher(self) -> JsPublisher:
        self.nc  # noqa: B018 - raises the right error
        assert self._pub is not None
        return self._pub

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def connected_url(self) -> str | None:
        if self._nc is None or self._nc.connected_url is None:
            return None
        u = self._nc.connected_url
        return f"{u.scheme}://{u.hostname}:{u.port}"

    @property
    def connected_netloc(self) -> str | None:
        return self._nc.connected_url.netloc if self._nc and self._nc.connected_url else None

    def server_info(self) -> ServerInfo:
        return server_info_of(self.nc)

    def jetstream_here(self) -> bool:
        """Whether the connected server runs JetStream itself (False on the relay hub)."""
        return self.server_info().jetstream

    async def wait_reopened(self, timeout: float) -> bool:
        """Wait until the connection is usable again after a close under us; False on timeout."""
        if self._nc is not None and not self._nc.is_closed:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reopened.wait(), timeout)
            return True
        return False

    # -- core messaging --------------------------------------------------------------------------------
    def new_inbox(self) -> str:
        return self.nc.new_inbox()

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                      reply: str = "") -> None:
        """A core publish: no stream acknowledgement (heartbeats, naks, pull requests)."""
        with translate_nats_errors(f"publish to {subject}"):
            await self.nc.publish(subject, data, reply=reply, headers=headers)

    async def flush(self, timeout: float = 2.0) -> None:
        with translate_nats_errors("flush"):
            await self.nc.flush(timeout=max(1, round(timeout)))  # nats-py takes whole seconds

    async def subscribe(self, subject: str, cb: Inbound) -> _Sub:
        """A plain subscription; kept across a reopen. ``await sub.unsubscribe()`` ends it."""
        sub = _Sub(self, subject, cb)
        await sub.attach(self.nc)
        if self._checks_permissions:
            # The server answers SUB before the next PING, so a refusal has arrived by its PONG; two
            # round trips, because the first PONG may answer a PING nats-py sent earlier.
            await self.flush()
            await self.flush()
            if (refused := self.denials.refused(subject, "subscribe to")) is not None:
                await sub.unsubscribe()
                raise refused
        self._subs.add(sub)
        return sub

    async def reply_waiter(self, subject: str, max_msgs: int = 1) -> ReplyWaiter:
        """Replies on ``subject``: one by default; 0 = until closed (a caller that may refuse forged ones)."""
        with translate_nats_errors(f"subscribe {subject}"):
            return ReplyWaiter(await self.nc.subscribe(subject, max_msgs=max_msgs))

    def prefer(self, url: str) -> None:
        """Try ``url`` first on the next reconnect (then the others, the current server last)."""
        self._policy.prefer(url)
        self._policy.avoid(self.connected_netloc)

    def avoid_current(self) -> None:
        """Put the current server last for the next reconnect (it is cut off from the quorum)."""
        self._policy.avoid(self.connected_netloc)

    async def force_reconnect(self) -> None:
        """Leave the current server now (the reconnect policy decides where to go)."""
        with translate_nats_errors("reconnect"):
            await self.nc.force_reconnect()
