"""The one place that opens NATS connections: server lists, reconnect policy, TLS and credentials."""

from __future__ import annotations

import logging
import random
import ssl
from typing import Any

import nats
from nats.aio.client import Client

from .config import MeshConfig
from .errors import ConfigError, ConnectError, translate_nats_errors

__all__ = ["backoff_delay", "connect", "tls_context"]

log = logging.getLogger("nxs_mesh.connection")


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


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter (so a restarted cluster is not stampeded)."""
    return random.uniform(0, min(cap, base * (2 ** max(0, attempt))))


def _reconnect_wait(attempt: int) -> float:
    return backoff_delay(attempt, base=0.1, cap=2.0)


async def connect(cfg: MeshConfig, *, name: str | None = None, **callbacks: Any) -> Client:
    """Open a client to the first reachable server of ``cfg.servers``; reconnect forever afterwards.

    Raises ``ConnectError`` naming the servers tried when none answers.
    """
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
