"""The one place that opens NATS connections: server lists (TCP and WebSocket), reconnect policy,
TLS and credentials, and a ConnectError that says why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import nats
from nats.aio.client import Client

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport import enable_websocket
from nxs_mesh.transport.translate import translate_nats_errors
from nxs_mesh.wire.errors import ConfigError, ConnectError, MeshTimeout

__all__ = ["ReconnectPolicy", "connect", "server_list", "server_path", "tls_context", "transport_groups"]

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


def server_path(servers: Sequence[str], connected: str | None, *, jetstream: bool | None = None) -> str:
    """Which path a connection uses: "local" (first listed), "peer", "relay" or "disconnected".

    ``jetstream`` is what the connected server's INFO says. Every mesh member runs JetStream; the relay
    hub (``deploy.relay``) does not and reaches the cluster's JetStream over its leafnode connection,
    so ``jetstream=False`` on any server but the first listed is the relay (the local server without
    JetStream is a local one misconfigured, which the client leaves). Without the INFO (None), a ws/wss
    URL, or a tls URL listed last of several, is taken for the relay."""
    if not connected:
        return "disconnected"
    c = urlparse(connected)
    for i, url in enumerate(servers):
        u = urlparse(url)
        if (u.hostname, u.port or 4222) == (c.hostname, c.port or 4222):
            if i == 0:
                return "local"
            if jetstream is False:
                return "relay"
            if jetstream is None and (u.scheme in ("ws", "wss") or (u.scheme == "tls" and i == len(servers) - 1)):
                return "relay"
            return "peer"
    if jetstream is False or (jetstream is None and c.scheme in ("ws", "wss")):
        return "relay"
    return "peer"  # a member learnt from the cluster's INFO


class ReconnectPolicy:
    """Server selection for nats-py reconnects: listed order (local first), then exponential backoff with
    full jitter after each full round, forever. ``avoid(url)`` puts a server last for the next reconnect
    (an isolated server that keeps answering "JetStream unavailable")."""

    def __init__(self, *, base: float = 0.1, cap: float = 2.0) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._avoid: str | None = None
        self._prefer: tuple[str | None, int] | None = None  # (host, port): first for the next reconnect

    def __repr__(self) -> str:
        return f"<ReconnectPolicy attempt={self.attempt} avoid={self._avoid}>"

    def avoid(self, netloc: str | None) -> None:
        self._avoid = netloc

    def prefer(self, url: str) -> None:
        """Try ``url`` first on the next reconnect (nats-py rotates its pool: listed order is gone by
        then). The path probe's way back from the relay."""
        u = urlparse(url)
        self._prefer = (u.hostname, u.port or 4222)

    def reset(self) -> None:
        self.attempt = 0
        self._avoid = None
        self._prefer = None

    def __call__(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        order = [s for s in servers if s.uri.netloc != self._avoid]
        order += [s for s in servers if s.uri.netloc == self._avoid]
        # Stable: the preferred server first, the rest in their order.
        order.sort(key=lambda s: (s.uri.hostname, s.uri.port or 4222) != self._prefer)
        n = max(1, len(order))
        pick = order[self.attempt % n] if order else None
        delay = 0.0 if self.attempt < n else backoff_delay(self.attempt // n, base=self.base, cap=self.cap)
        self.attempt += 1
        return pick, delay


def transport_groups(servers: Sequence[str]) -> list[list[str]]:
    """The server list cut by transport: nats-py refuses to mix WebSocket (ws/wss) and TCP (nats/tls)
    URLs in one connection, so each family is tried as its own list, in the order it first appears.

    >>> transport_groups(["nats://a:4222", "nats://b:4222", "wss://relay:443"])
    [['nats://a:4222', 'nats://b:4222'], ['wss://relay:443']]
    """
    groups: dict[bool, list[str]] = {}
    for url in servers:
        groups.setdefault(_is_ws(url), []).append(url)
    return list(groups.values())


def _is_ws(url: str) -> bool:
    return urlparse(url).scheme in ("ws", "wss")


def _require_aiohttp() -> None:
    """nats-py speaks WebSocket through aiohttp; without it every ws:// attempt fails with a bare
    "no servers available", so say what is missing before trying."""
    try:
        enable_websocket()
    except ImportError as exc:
        raise ConfigError(
            "servers", f"ws:// and wss:// URLs need the aiohttp package, which does not import here ({exc}); "
            "it is a dependency of nxs-mesh: reinstall it, or `pip install aiohttp`"
        ) from None


def _cause(exc: BaseException) -> str:
    """One line on why one connection attempt failed, naming what is wrong where it can tell."""
    text = " ".join(str(exc).split())
    url = getattr(getattr(exc, "request_info", None), "real_url", None)
    if url is not None and "INFO {" in text:
        # The port answered with the NATS client protocol's greeting, not an HTTP upgrade.
        u = urlparse(str(url))
        return (f"{url} is not a WebSocket listener: it speaks the plain NATS protocol "
                f"(use nats://{u.hostname}:{u.port} for it, or the server's websocket port)")
    if url is not None and getattr(exc, "status", None):
        return f"{url} is not a WebSocket listener: it answered HTTP {exc.status}"  # type: ignore[attr-defined]
    os_error = getattr(exc, "os_error", exc)  # aiohttp wraps the socket's error
    if isinstance(os_error, ConnectionRefusedError):
        return f"connection refused ({text[:160]})"
    if isinstance(exc, TimeoutError) and not text:
        return "no answer within connect_timeout (a WebSocket or HTTP port stays silent to nats://)"
    return f"{type(exc).__name__}: {text[:200]}"


async def connect(
    cfg: MeshConfig, *, name: str | None = None, policy: ReconnectPolicy | None = None, **callbacks: Any
) -> Client:
    """Open a client to the first reachable server of ``cfg.servers``; reconnect forever afterwards
    (``policy``: listed order, backoff with jitter).

    WebSocket URLs (``ws://``, ``wss://``, e.g. the relay listed last) work too. nats-py keeps one
    transport per connection, so TCP and WebSocket servers are tried as separate lists in listed
    order (``transport_groups``), and the connection then reconnects within the list it joined.

    Raises ``ConnectError`` naming the servers tried and why each failed; ``ConfigError`` when a
    WebSocket URL is listed but aiohttp is missing.
    """
    if any(_is_ws(url) for url in cfg.servers):
        _require_aiohttp()
    policy = policy or ReconnectPolicy()
    failures: list[BaseException] = []
    options = _options(cfg, name, policy, failures, callbacks)
    # A client we give up on (below) must not run the caller's closed callback: the caller never got it.
    handed_over: list[Client] = []
    if (user_closed := options.get("closed_cb")) is not None:
        async def closed() -> None:
            if handed_over:
                await user_closed()

        options["closed_cb"] = closed
    problems = []
    for group in transport_groups(cfg.servers):
        failures.clear()
        try:
            with translate_nats_errors("connect"):
                # Bounded: after a failed TLS verification nats-py's connect can hang for good.
                nc = await asyncio.wait_for(nats.connect(servers=group, **options),
                                            cfg.connect_timeout * 2 * len(group) + 1)
        except (OSError, ConnectError, MeshTimeout) as exc:
            causes = list(dict.fromkeys(_cause(e) for e in failures)) or [_cause(exc)]
            problems.append(f"{', '.join(group)}: {'; '.join(causes)}")
            continue
        if not nc.is_connected:
            # TLS 1.3: the handshake completes on our side before the server checks our certificate; a
            # server that refuses it (not pinned: revoked) closes right after, and nats-py returns a
            # client that is not connected. That is a refusal, not a network fault: say so.
            with contextlib.suppress(Exception):
                await nc.close()
            problems.append(f"{', '.join(group)}: the server closed the connection after the TLS handshake "
                            "(is this identity's certificate trusted, or was it revoked?)")
            continue
        nc.options["max_reconnect_attempts"] = -1
        handed_over.append(nc)
        return nc
    refused = all("connection refused" in p for p in problems)
    hint = (" Is the mesh running? Start one with `nxs up` or `make run`, or set --url / NXS_URL."
            if refused else "")
    raise ConnectError(f"cannot reach any NATS server ({' | '.join(problems)}).{hint}")


def _options(
    cfg: MeshConfig, name: str | None, policy: ReconnectPolicy, failures: list[BaseException],
    callbacks: dict[str, Any],
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": name or f"nxs:{cfg.instance_id}:{cfg.agent_id}",
        "connect_timeout": cfg.connect_timeout,
        "allow_reconnect": True,
        # The first connect tries each server twice and then fails with a clear error; once connected
        # we switch to reconnecting forever (in connect), so nodes ride out restarts and partitions.
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
    user_error = callbacks.pop("error_cb", None)

    async def _error(exc: Exception) -> None:
        # nats-py reports every failed (re)connect here: kept for the ConnectError's explanation, and
        # logged at debug (the state is visible elsewhere).
        if len(failures) < 20:
            failures.append(exc)
        log.debug("nats: %s", exc)
        if user_error is not None:
            await user_error(exc)

    options["error_cb"] = _error
    user_reconnected = callbacks.pop("reconnected_cb", None)

    async def _reconnected() -> None:
        policy.reset()
        if user_reconnected is not None:
            await user_reconnected()

    options["reconnected_cb"] = _reconnected
    options.update(callbacks)
    return options
