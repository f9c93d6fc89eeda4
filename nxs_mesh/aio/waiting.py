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


class Wakeup:
    """A wait that ``set()`` ends early: one future at a time, one timer, no task (hot paths)."""

    __slots__ = ("_fut",)

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None

    def set(self) -> None:
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until ``set()`` or ``timeout`` seconds, whichever comes first."""
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        fut = self._fut = loop.create_future()
        timer = loop.call_later(timeout, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._fut = None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
