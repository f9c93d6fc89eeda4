"""Wait for a condition with a deadline: the one polling loop the library, CLI and tests share."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nxs_mesh.wire.errors import MeshTimeout

__all__ = ["wait_until"]


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float, what: str = "", interval: float = 0.05
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; ``MeshTimeout`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise MeshTimeout(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)  # sleep-ok: polling a condition with a deadline
