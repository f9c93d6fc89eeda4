"""The way back from the relay, and a quick way onto it (issue 13 part 5), for one ``Link``.

    probe = PathProbe(link, jetstream_of)   # the link keeps ``probe.run`` in its supervisor
    probe.switches                          # how often it moved the link back to a direct server

Back. nats-py stays on a connection that works: a client that fell back to the relay hub would stay
there after its direct routes heal. So while the link's path is ``relay``, every ``every`` seconds the
probe opens a short connection to each direct server of the same transport (listed order) and asks it
for the JetStream account info (it needs the meta leader, so a member cut off from the quorum does not
answer; ``client.publishing`` tells isolation the same way). The first that answers wins: it goes
first for the next reconnect (the relay last: nats-py has rotated its pool by then) and the link
forces one. Nothing is doubled by the switch: a publish whose acknowledgement was on its way through
the hub times out and is sent again with the same ``Nats-Msg-Id`` (JetStream drops the copy), the
outbox keeps what waits, and consumers fetch again on the new connection. A delivery that was on its
way into the old connection is redelivered after its consumer's ack wait: late, not lost.

Onto it. A direct link that goes silent (cut cable, dropped routes: no RST, no FIN) leaves the TCP
socket open, and nats-py notices only after ``ping_interval x max_outstanding_pings`` (15 s): long
enough for the Doctor (5 s) to call a node dead that was only moving. ``bound_unacked`` sets
``TCP_USER_TIMEOUT`` on the connection's socket, so the kernel drops it when sent data (a heartbeat,
any publish, a PING) stays unacknowledged that long, and nats-py reconnects at once, with no extra
traffic. Linux only; WebSocket connections keep nats-py's pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol
from urllib.parse import urlparse

from nats.aio.client import Client

from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.connection import connect, server_path, transport_groups
from nxs_mesh.transport.translate import translate_nats_errors
from nxs_mesh.wire.errors import MeshError

__all__ = ["PROBE_EVERY", "UNACKED_LIMIT", "PathProbe", "bound_unacked"]

log = logging.getLogger("nxs_mesh.transport.path_probe")

#: Seconds between two probes of the direct servers while the link is on the relay.
PROBE_EVERY = 3.0
#: Seconds sent data may stay unacknowledged before the kernel drops the connection: under the
#: Doctor's default dead_after (5 s) with a heartbeat (1 s) and a reconnect to spare.
UNACKED_LIMIT = 2.0


def bound_unacked(nc: Client, seconds: float = UNACKED_LIMIT) -> bool:
    """``TCP_USER_TIMEOUT`` on ``nc``'s TCP socket (under TLS too); False where there is none (WebSocket,
    not Linux). nats-py does not expose the socket: ``_transport._bare_io_writer`` is its plain stream
    writer (``tests/test_layers.py`` fails if nats-py renames it)."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    writer = getattr(getattr(nc, "_transport", None), "_bare_io_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    if option is None or sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
    except OSError as exc:  # a socket closing under us: the next connection gets it
        log.debug("TCP_USER_TIMEOUT not set: %s", exc)
        return False
    return True


class _Link(Protocol):
    """What the probe uses of its ``transport.link.Link`` (which imports this module)."""

    config: MeshConfig

    @property
    def is_connected(self) -> bool: ...
    @property
    def connected_url(self) -> str | None: ...
    def jetstream_here(self) -> bool: ...
    def prefer(self, url: str) -> None: ...
    async def force_reconnect(self) -> None: ...


def _netloc(url: str) -> tuple[str | None, int]:
    u = urlparse(url)
    return u.hostname, u.port or 4222


class PathProbe:
    """While ``link`` is on the relay, finds a direct server that serves JetStream and moves back to it."""

    def __init__(self, link: _Link, jetstream_of: Callable[[Client], bool], *, every: float = PROBE_EVERY,
                 timeout: float = 2.0) -> None:
        """``jetstream_of(nc)``: whether ``nc``'s server runs JetStream itself (its INFO says so)."""
        self._link, self._jetstream_of, self.every, self.timeout = link, jetstream_of, every, timeout
        self.switches = 0
        self.probes = 0

    def __repr__(self) -> str:
        return f"<PathProbe every={self.every}s probes={self.probes} switches={self.switches}>"

    def on_relay(self) -> bool:
        link = self._link
        if not link.is_connected:
            return False
        try:
            jetstream = link.jetstream_here()
        except MeshError:  # closing or reopening under us
            return False
        return server_path(link.config.servers, link.connected_url, jetstream=jetstream) == "relay"

    def candidates(self) -> list[str]:
        """The direct servers to try: the listed ones of the connection's transport (nats-py reconnects
        within it), the connected one (the relay) left out, in listed order."""
        here = self._link.connected_url
        if here is None:
            return []
        for group in transport_groups(self._link.config.servers):
            if _netloc(here) in {_netloc(u) for u in group}:
                return [u for u in group if _netloc(u) != _netloc(here)]
        return []

    async def run(self) -> None:
        """Forever (the link's supervisor owns it): one look per ``every`` seconds, a probe when on the relay."""
        while True:
            await asyncio.sleep(self.every)  # sleep-ok: the probe's schedule, not a synchronisation
            if self.on_relay() and (found := await self.first_direct()) is not None:
                log.warning("direct server %s answers again: leaving the relay %s", found, self._link.connected_url)
                self.switches += 1
                self._link.prefer(found)
                with contextlib.suppress(MeshError):  # the link went away meanwhile: it reconnects anyway
                    await self._link.force_reconnect()

    async def first_direct(self) -> str | None:
        """The first candidate that accepts a connection and answers JetStream there, or None."""
        for url in self.candidates():
            self.probes += 1
            if await self._serves_jetstream(url):
                return url
        return None

    async def _serves_jetstream(self, url: str) -> bool:
        cfg = replace(self._link.config, servers=(url,), connect_timeout=min(self._link.config.connect_timeout,
                                                                              self.timeout))
        try:
            nc = await asyncio.wait_for(connect(cfg, name=f"nxs:{cfg.instance_id}:path-probe"), self.timeout * 3)
        except (MeshError, OSError, TimeoutError):
            return False
        try:
            if not self._jetstream_of(nc):
                return False  # another relay, or a server without JetStream
            with translate_nats_errors("path probe"):
                await nc.jetstream(timeout=self.timeout).account_info()
            return True
        except (MeshError, TimeoutError) as exc:
            log.debug("probe of %s: %s", url, exc)
            return False
        finally:
            with contextlib.suppress(Exception):  # a probe connection: whatever it says, it is done
                await nc.close()
