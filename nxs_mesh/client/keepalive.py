"""In-progress acks for handlers that run long, at the cost of a dict entry per message.

Most handlers finish well within the ack wait; only one that outlasts ``interval`` gets a keepalive
task (``in_progress`` every interval until it ends), so that JetStream does not redeliver it
mid-work. One timer per consumer sweeps the running handlers every ``interval`` while any run (it
is not cancelled when the last one ends: it lapses at its next sweep), instead of a timer armed and
cancelled per message (~1.5 us of the consume path). A handler is noticed between one and two intervals after it started; with the interval at a
third of the ack wait the first in-progress ack still goes out before the ack wait ends.

    alive = KeepAlive(interval=10.0, tasks=supervisor)
    key = alive.started(msg)
    try:
        await handler(...)
    finally:
        alive.finished(key)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.transport import pull
from nxs_mesh.transport.pull import Delivered
from nxs_mesh.wire.errors import MeshError

__all__ = ["KeepAlive"]

log = logging.getLogger("nxs_mesh.client.keepalive")


class KeepAlive:
    """Tracks running handlers; keeps alive (in-progress acks) those that outlast ``interval``."""

    def __init__(self, interval: float, tasks: Supervisor) -> None:
        self.interval, self._tasks = interval, tasks
        self._running: dict[int, tuple[Delivered, float]] = {}  # key -> (delivery, started at)
        self._kept: dict[int, asyncio.Task[None]] = {}
        self._keys = itertools.count()
        self._sweeper: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<KeepAlive every {self.interval:g}s [{len(self._running)} running, {len(self._kept)} kept alive]>"

    def started(self, msg: Delivered) -> int:
        key = next(self._keys)
        self._running[key] = (msg, time.monotonic())  # the loop's clock (asyncio uses time.monotonic)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.interval, self._sweep)
        return key

    def finished(self, key: int) -> None:
        del self._running[key]
        if self._kept:
            task = self._kept.pop(key, None)
            if task is not None:
                task.cancel()

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        cutoff = time.monotonic() - self.interval
        for key, (msg, since) in list(self._running.items()):
            if since <= cutoff and key not in self._kept:
                try:
                    self._kept[key] = self._tasks.spawn(f"keepalive {msg.reply}", self._keepalive(msg))
                except RuntimeError:  # the consumer is stopping: its handlers are being cancelled anyway
                    self._sweeper = None
                    return
        self._sweeper = loop.call_later(self.interval, self._sweep) if self._running else None

    async def _keepalive(self, msg: Delivered) -> None:
        """In-progress acks while a handler runs. A failed one (reconnecting) is tried again next
        interval; the handler's own outcome settles the message."""
        while True:
            try:
                await pull.in_progress(msg)
            except MeshError as exc:
                log.debug("in-progress ack failed (%s); next in %.1fs", exc, self.interval)
            await asyncio.sleep(self.interval)  # sleep-ok: a timer, not synchronisation
