"""A priority window: deliveries waiting at the consumer, the most urgent started whenever a slot frees.

Fetching a batch and sorting it orders only that batch; a worker that fetches as many as it can run
(``batch = concurrency``) therefore runs a backlog in arrival order. The window decouples the two:
the consumer keeps up to ``window`` deliveries in hand (running plus waiting), fetches again as soon
as there is room, and starts waiting ones by priority (higher first, then stream order) as slots free.

Used two ways (see ``Consumer``):

- **COMMAND** (``window`` > ``concurrency``, one consumer per node): commands are addressed to one
  node, so holding them costs no other worker anything; a node's durable consumer keeps its name
  and its place in the stream, and idles on one long poll. What it orders is what it holds: a
  backlog longer than the window is ordered window by window. Waiting deliveries get in-progress
  acks so that they are not redelivered while they wait; on stop they are handed back (nak).
- **TASK** lanes (``window`` = ``concurrency``, ``transport.lanes``): the source itself hands out
  the most urgent first and never more than the free slots, so nothing waits here.

    window = PriorityWindow(policy, window=256, concurrency=1, tasks=supervisor)
    await window.wait_room(stopping)
    await window.offer(await session.next_batch(stopping, want=window.room))
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging

from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.client.delivery import DeliveryPolicy, Ready
from nxs_mesh.transport import pull
from nxs_mesh.transport.pull import Delivered, Meta
from nxs_mesh.wire.errors import MeshError

__all__ = ["DEFAULT_WINDOW", "PriorityWindow"]

log = logging.getLogger("nxs_mesh.client.window")

#: Deliveries a node's command consumer keeps in hand: the backlog it orders by priority at once.
DEFAULT_WINDOW = 256

_Waiting = tuple[int, int, int, float, Ready]  # (-priority, stream seq, tie, since, item)


class PriorityWindow:
    """Holds screened deliveries and runs them by priority with at most ``concurrency`` at once."""

    def __init__(self, policy: DeliveryPolicy, *, window: int, concurrency: int, tasks: Supervisor) -> None:
        self._policy, self._tasks = policy, tasks
        self.concurrency = max(1, concurrency)
        self.window = max(self.concurrency, window)
        self._waiting: list[_Waiting] = []
        self._tie = itertools.count()
        self.running = 0
        self._changed = asyncio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"<PriorityWindow [{self.running} running, {len(self._waiting)} waiting, window {self.window}]>"

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def room(self) -> int:
        return self.window - len(self._waiting) - self.running

    async def wait_room(self, stopping: asyncio.Event) -> None:
        """Return once there is room for another delivery (or ``stopping`` is set)."""
        while self.room <= 0 and not stopping.is_set():
            self._changed.clear()
            waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self._changed.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def offer(self, msgs: list[tuple[Delivered, Meta]]) -> None:
        """Screen deliveries into the window (invalid or expired ones are settled at once) and start
        what the free slots allow, most urgent first."""
        loop = asyncio.get_running_loop()
        for msg, meta in msgs:
            item = await self._policy.screen(msg, meta)
            if item is not None:
                heapq.heappush(self._waiting, (-item[0], item[1], next(self._tie), loop.time(), item))
        self._start()

    def _start(self) -> None:
        while not self._closed and self.running < self.concurrency and self._waiting:
            item = heapq.heappop(self._waiting)[-1]
            self.running += 1
            self._tasks.spawn(f"handle seq {item[1]}", self._run(item))

    async def _run(self, item: Ready) -> None:
        try:
            await self._policy.handle(item)
        finally:
            self.running -= 1
            self._start()
            self._changed.set()

    async def keep_alive(self, interval: float) -> None:
        """A loop: in-progress acks for deliveries that have waited ``interval`` (so that JetStream does
        not redeliver them while they wait their turn)."""
        while True:
            await asyncio.sleep(interval)  # sleep-ok: a timer, not synchronisation
            cutoff = asyncio.get_running_loop().time() - interval
            for entry in list(self._waiting):
                if entry[3] <= cutoff:
                    try:
                        await pull.in_progress(entry[-1][3])
                    except MeshError as exc:
                        log.debug("in-progress ack of a waiting delivery failed: %s", exc)

    async def drain(self, grace: float) -> int:
        """Stop starting; hand the waiting deliveries back (nak) and give the running ones ``grace``
        seconds. Returns how many were handed back."""
        self._closed = True
        waiting, self._waiting = self._waiting, []
        for entry in waiting:
            try:
                await pull.nak(entry[-1][3])
            except MeshError as exc:  # unacked anyway: redelivered after ack_wait
                log.debug("nak of a waiting delivery failed: %s", exc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.running and loop.time() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
            except TimeoutError:
                break
        return len(waiting)
