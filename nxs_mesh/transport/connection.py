"""The one place that opens NATS connections: server lists, reconnect policy, TLS and credentials."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import nats
from nats.aio.client import Client

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.translate import translate_nats_errors
from nxs_mesh.wire.errors import ConfigError, ConnectError

__all__ = ["ReconnectPolicy", "connect", "server_list", "server_path", "tls_context"]

log = logging.getLogger("nxs_mesh.transport.connection")


def tls_context(cfg: MeshConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_ca or cfg.tls_cert):
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca) if cfg.tls_ca else ssl.create_default_context()
        if cfg.tls_cert and cfg.tls_key:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls", f"cannot load TLS files: {exc}") from None
    return ctx


def server_list(local: str | None, peers: Sequence[str] = (), relay: str | None = None) -> tuple[str, ...]:
    """The order clients try servers in: the local one, the other cluster members, the relay last.

    >>> server_list("nats://127.0.0.1:4222", ["nats://100.64.0.2:4222"], "wss://relay.example:443")
    ('nats://127.0.0.1:4222', 'nats://100.64.0.2:4222', 'wss://relay.example:443')
    """
    out: list[str] = []
    for url in (local, *peers, relay):
        if url and url not in out:
            out.append(url)
    return tuple(out)


def server_path(servers: Sequence[str], connected: str | None) -> str:
    """Which path a connection uses: "local" (first listed), "peer", "relay" (ws/wss, or last of
    several when marked by a ws/wss/tls scheme) or "disconnected"."""
    if not connected:
        return "disconnected"
    c = urlparse(connected)
    for i, url in enumerate(servers):
        u = urlparse(url)
        if (u.hostname, u.port or 4222) == (c.hostname, c.port or 4222):
            if i == 0:
                return "local"
            if u.scheme in ("ws", "wss") or (u.scheme == "tls" and i == len(servers) - 1 and i > 0):
                return "relay"
            return "peer"
    return "relay" if c.scheme in ("ws", "wss") else "peer"  # a member learnt from the cluster's INFO


class ReconnectPolicy:
    """Server selection for nats-py reconnects: listed order (local first), then exponential backoff with
    full jitter after each full round, forever. ``avoid(url)`` puts a server last for the next reconnect
    (an isolated server that keeps answering "JetStream unavailable")."""

    def __init__(self, *, base: float = 0.1, cap: float = 2.0) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._avoid: str | None = None

    def __repr__(self) -> str:
        return f"<ReconnectPolicy attempt={self.attempt} avoid={self._avoid}>"

    def avoid(self, netloc: str | None) -> None:
        self._avoid = netloc

    def reset(self) -> None:
        self.attempt = 0
        self._avoid = None

    def __call__(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        order = [s for s in servers if s.uri.netloc != self._avoid]
        order += [s for s in servers if s.uri.netloc == self._avoid]
        n = max(1, len(order))
        pick = order[self.attempt % n] if order else None
        delay = 0.0 if self.attempt < n else backoff_delay(self.attempt // n, base=self.base, cap=self.cap)
        self.attempt += 1
        return pick, delay


async def connect(
    cfg: MeshConfig, *, name: str | None = None, policy: ReconnectPolicy | None = None, **callbacks: Any
) -> Client:
    """Open a client to the first reachable server of ``cfg.servers``; reconnect forever afterwards
    (``policy``: listed order, backoff with jitter).

    Raises ``ConnectError`` naming the servers tried when none answers.
    """
    policy = policy or ReconnectPolicy()
    options: dict[str, Any] = {
        "servers": list(cfg.servers),
        "name": name or f"nxs:{cfg.instance_id}:{cfg.agent_id}",
        "connect_timeout": cfg.connect_timeout,
        "allow_reconnect": True,
        # The first connect tries each server twice and then fails with a clear error; once connected
        # we switch to reconnecting forever (below), so nodes ride out restarts and partitions.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.25,
        "ping_interval": 5,
        "max_outstanding_pings": 3,
        "inbox_prefix": cfg.inbox,
        "dont_randomize": True,  # local server first, then peers, then the relay, as listed
        "reconnect_to_server_handler": policy,
    }
    ctx = tls_context(cfg)
    if ctx is not None:
        options["tls"] = ctx
    if cfg.creds:
        options["user_credentials"] = cfg.creds
    if cfg.nkey_seed:
        options["nkeys_seed"] = cfg.nkey_seed
    if cfg.user:
        options["user"], options["password"] = cfg.user, cfg.password
    if cfg.token:
        options["token"] = cfg.token

    async def _quiet_error(exc: Exception) -> None:
        # nats-py reports every failed reconnect here; keep it at debug, state is visible elsewhere.
        log.debug("nats: %s", exc)

    options.setdefault("error_cb", _quiet_error)
    user_reconnected = callbacks.pop("reconnected_cb", None)

    async def _reconnected() -> None:
        policy.reset()
        if user_reconnected is not None:
            await user_reconnected()

    options["reconnected_cb"] = _reconnected
    options.update(callbacks)
    try:
        with translate_nats_errors("connect"):
            nc = await nats.connect(**options)
        nc.options["max_reconnect_attempts"] = -1
        return nc
    except OSError as exc:
        raise ConnectError(f"cannot reach {', '.join(cfg.servers)}: {exc}") from None
    except ConnectError as exc:
        raise ConnectError(
            f"cannot reach any NATS server ({', '.join(cfg.servers)}); is the mesh running? "
            f"Start one with `nxs up` or `make run`, or set --url / NXS_URL. ({exc})"
        ) from None
