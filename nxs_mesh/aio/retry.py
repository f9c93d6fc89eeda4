"""Backoff and retries: the one formula every retrying loop in the mesh uses.

    delay = backoff_delay(attempt, base=0.1, cap=2.0)            # full jitter, for reconnect stampedes
    delay = backoff_delay(attempt, base=0.5, cap=30, jitter=False)  # deterministic, for redelivery
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nxs_mesh.wire.errors import ConfigError, MeshError, StreamConflict

__all__ = ["backoff_delay", "retrying"]

log = logging.getLogger("nxs_mesh.aio.retry")

T = TypeVar("T")


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 5.0, jitter: bool = True) -> float:
    """``base * 2**attempt`` capped at ``cap``; with ``jitter`` a uniform draw below it (full jitter, so
    a restarted cluster is not stampeded by every client at once)."""
    delay = min(cap, base * (2 ** max(0, min(attempt, 30))))
    return random.uniform(0, delay) if jitter else delay


async def retrying(op: Callable[[], Awaitable[T]], what: str, *, timeout: float = 60.0) -> T:
    """Run a JetStream operation again through transient failures (a stream leader election, a
    reconnect) until ``timeout``. Only for operations that are safe to repeat (idempotent ensures,
    publishes with a deterministic message id). Configuration errors are not retried."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return await op()
        except (ConfigError, StreamConflict):
            raise
        except MeshError as exc:
            attempt += 1
            if time.monotonic() + 0.1 > deadline:
                raise
            delay = backoff_delay(attempt, base=0.1, cap=2.0, jitter=False)
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)  # sleep-ok: backoff between retries
