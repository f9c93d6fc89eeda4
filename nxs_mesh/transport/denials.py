"""The server's permission refusals, turned into ``PermissionDenied`` naming the subject.

nats-server answers an operation its permissions refuse with an asynchronous ``-ERR 'Permissions
Violation for Publish to "SUBJECT"'`` (or ``Subscription to``) and keeps the connection; nats-py hands
that to the error callback and the refused request would otherwise just time out. ``Denials`` keeps
the recent refusals by subject and wakes whoever waits on that subject:

- a request (every JetStream API call goes through ``nc.request``) races its reply against a refusal
  of its subject, so ``nxs`` says "permission denied … 'SUBJECT'" at once instead of timing out;
- a subscription in secure mode is followed by a flush: the server handles SUB before the PING, so a
  refusal has arrived by the PONG;
- a JetStream publish that timed out checks whether its subject was refused (no cost on the hot path).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from nxs_mesh.wire.errors import PermissionDenied

__all__ = ["Denials"]

log = logging.getLogger("nxs_mesh.transport.denials")
T = TypeVar("T")
_VIOLATION: Final = re.compile(r"permissions violation for (publish|subscription) to \"([^\"]+)\"", re.I)
_KEEP: Final = 60.0  # seconds a refusal is remembered for the timeout check


class Denials:
    """Recent permission refusals of one connection, by subject."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._waiters: dict[str, list[tuple[str, asyncio.Future[PermissionDenied]]]] = {}

    def note(self, error_text: str) -> bool:
        """Record a refusal from nats-py's error callback text; True when it was one."""
        m = _VIOLATION.search(error_text)
        if m is None:
            return False
        operation = "publish to" if m.group(1).lower() == "publish" else "subscribe to"
        subject = m.group(2).lower()  # nats-py lowercases the server's error text: compare lowercased
        now = time.monotonic()
        if (operation, subject) not in self._seen:
            log.warning("server refused: %s %s", operation, subject)
        self._seen[(operation, subject)] = now
        if len(self._seen) > 1000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < _KEEP}
        for original, fut in self._waiters.pop(subject, []):
            if not fut.done():
                fut.set_result(PermissionDenied(operation, original))
        return True

    def refused(self, subject: str, operation: str = "publish to") -> PermissionDenied | None:
        at = self._seen.get((operation, subject.lower()))
        if at is None or time.monotonic() - at > _KEEP:
            return None
        return PermissionDenied(operation, subject)

    async def race(self, subject: str, operation: Awaitable[T]) -> T:
        """Await ``operation``; if the server refuses ``subject`` first, cancel it and raise."""
        loop = asyncio.get_running_loop()
        refusal: asyncio.Future[PermissionDenied] = loop.create_future()
        key, entry = subject.lower(), (subject, refusal)
        self._waiters.setdefault(key, []).append(entry)
        task = asyncio.ensure_future(operation)
        try:
            await asyncio.wait((task, refusal), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None and entry in waiters:
                waiters.remove(entry)
                if not waiters:
                    del self._waiters[key]
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise refusal.result()

    def guard_requests(self, nc: Any) -> None:
        """Make every ``nc.request`` (JetStream API calls too) fail fast on a refused subject."""
        real: Callable[..., Awaitable[Any]] = nc.request

        async def request(subject: str, payload: bytes = b"", timeout: float = 0.5, old_style: bool = False,
                          headers: dict[str, Any] | None = None) -> Any:
            return await self.race(subject, real(subject, payload, timeout=timeout, old_style=old_style,
                                                 headers=headers))

        nc.request = request
