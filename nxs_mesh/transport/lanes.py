"""Per-priority lanes of a shared work queue: one durable pull consumer per priority, so a worker
with a free slot takes the most urgent stored message, and holds nothing it cannot start.

The subject carries the priority (``nxs.task.<capability>.p<n>``), so lane ``n`` is a consumer
filtered on ``….p<n>``; on a work queue the lanes' filters must not overlap, and they do not. Why
lanes and not a fetch window for tasks: a window orders only what it holds, and on the shared queue
a worker holding tasks it has not started starves idle workers, must keep them alive, and takes
them down with it when it dies (the Doctor releases only claimed tasks). Lanes hold nothing.

Taking work, when the worker has ``want`` free slots:

- **Backlog.** One ``STREAM.INFO`` with a subjects filter counts the stored messages per subject
  (on a work queue: not yet acknowledged), so the highest non-empty lane is found in one round
  trip, not one per lane. A ``no_wait`` pull on it takes what is free there (a lane whose messages
  are all in flight at other workers answers 404 at once, and the next lane is asked).
- **Idle wait.** Nothing stored: a long-poll request goes to every lane, all answering to one
  subscription, so any new or redelivered message (a nak, the Doctor's release of a dead worker's
  claim) reaches an idle worker at once. As soon as the free slots are filled the subscription is
  dropped and the server discards the other lanes' requests (it checks a request's interest before
  delivering to it). Ten requests per wait: the wait lasts ``idle_wait`` (several fetch timeouts)
  to keep idle traffic near one consumer's, and a reconnect or a lost request starts a new one.
  Limit: a message the server sends to a withdrawn request in the round trip before it sees the
  unsubscribe is lost in flight, and JetStream redelivers it after ``ack_wait``.

The lane of the default priority keeps the consumer's name (``task-<capability>``), so an existing
consumer continues, its filter narrowed to its lane (it is declared first: on a work queue the
other lanes would overlap its old filter). A worker of an older version re-declaring the old
filter is refused by the server while the lanes exist: upgrade the workers of a capability together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass
from typing import Final

from nats.aio.subscription import Subscription

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.aio.waiting import Wakeup
from nxs_mesh.transport.inbox import Inbound, direct_subscribe, unsubscribe
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.pull import Meta, consumer_config, meta_of, nak, status_of
from nxs_mesh.transport.translate import translate_nats_errors
from nxs_mesh.wire.contract import DEFAULT_PRIORITY
from nxs_mesh.wire.errors import BrokenError

__all__ = ["LanePull", "LaneSpec"]

log = logging.getLogger("nxs_mesh.transport.lanes")

#: Priorities of the contract (DESIGN.md section 3), most urgent first.
PRIORITIES: Final = tuple(range(9, -1, -1))
_IDLE_WAIT_CAP: Final = 30.0


@dataclass(frozen=True)
class LaneSpec:
    stream: str
    durable: str  # the default priority's lane keeps this name; lane n is "<durable>-p<n>"
    prefixes: tuple[str, ...]  # lane n filters on "<prefix>.p<n>" for each prefix
    ack_wait: float = 30.0
    fetch_timeout: float = 1.0

    def name(self, priority: int) -> str:
        return self.durable if priority == DEFAULT_PRIORITY else f"{self.durable}-p{priority}"

    def filters(self, priority: int) -> tuple[str, ...]:
        return tuple(f"{prefix}.p{priority}" for prefix in self.prefixes)

    @property
    def idle_wait(self) -> float:
        return min(_IDLE_WAIT_CAP, 6 * max(0.1, self.fetch_timeout))


class LanePull:
    """Deliveries from the lanes of one work queue, most urgent first, never more than asked for.

    Bound to one connection: when the link reopens, ``next_batch`` raises ``BrokenError``."""

    def __init__(self, link: Link, spec: LaneSpec) -> None:
        self._link, self.spec = link, spec
        self._sub: Subscription | None = None  # answers to backlog pulls
        self._inbox = ""
        self._generation = -1
        self._buf: collections.deque[Inbound] = collections.deque()
        self._wake = Wakeup()
        self._n = 0
        self._fetch_reply, self._fetch_got, self._fetch_end = "", 0, ""
        self._arm: Subscription | None = None  # the idle wait's subscription
        self._arm_left, self._arm_end, self._arm_deadline, self._arm_reconnects = 0, "", 0.0, 0
        self._failures = 0
        self.fetching = False  # idle wait: nothing in hand
        self.last_error = ""

    def __repr__(self) -> str:
        return (f"<LanePull {self.spec.stream}/{self.spec.durable} [{len(PRIORITIES)} lanes, "
                f"{'waiting' if self._arm else 'backlog'}, {len(self._buf)} buffered]>")

    @property
    def durables(self) -> tuple[str, ...]:
        return tuple(self.spec.name(p) for p in PRIORITIES)

    async def open(self) -> None:
        """Create or update every lane (idempotent; the default lane first) and subscribe the inbox."""
        spec = self.spec
        order = [DEFAULT_PRIORITY, *(p for p in PRIORITIES if p != DEFAULT_PRIORITY)]
        for p in order:
            config = consumer_config(spec.name(p), spec.filters(p), ack_wait=spec.ack_wait, batch=1)
            with translate_nats_errors(f"consumer {spec.name(p)}"):
                await self._link.js.add_consumer(spec.stream, config)
        if self._sub is None:
            nc = self._link.nc
            with translate_nats_errors(f"consumer {spec.durable}"):
                self._inbox = nc.new_inbox()
                self._sub = await direct_subscribe(nc, f"{self._inbox}.*", self._on_fetched)
            self._generation = self._link.generation

    async def close(self) -> None:
        """Unsubscribe and hand back (nak) what arrived but was never taken."""
        await self._withdraw()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone; the server forgets the sub
                await unsubscribe(sub)
        await self._hand_back(list(self._buf))
        self._buf.clear()

    async def next_batch(self, stopping: asyncio.Event, want: int = 1) -> list[tuple[Inbound, Meta]]:
        """Up to ``want`` deliveries: the backlog's most urgent, else the first to arrive in an idle wait.
        Empty after an idle wait ended without any (already backed off on failures)."""
        if self._generation != self._link.generation:
            raise BrokenError(f"consumer {self.spec.durable}: the connection was reopened")
        want = max(1, want)
        if not self._buf and self._arm is None:
            try:
                if not self._link.is_connected:
                    raise ConnectionError("not connected")
                await self._from_backlog(want)
                if not self._buf:
                    await self._start_idle_wait(want)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - disconnected, electing...: back off, ask again
                await self._withdraw()
                await self._failed(f"fetch: {exc!r}", stopping)
                return []
        if not self._buf and self._arm is not None:
            await self._idle_wait(stopping)
        return await self._take(want)

    # -- backlog -----------------------------------------------------------------------------------
    async def _from_backlog(self, want: int) -> None:
        """Pull from the most urgent lanes that hold stored messages, until ``want`` are in hand."""
        counts = await self._counts()
        for p in PRIORITIES:
            if counts.get(p, 0) > 0 and len(self._buf) < want:
                await self._fetch_now(p, min(want - len(self._buf), counts[p]))

    async def _counts(self) -> dict[int, int]:
        """Stored messages per lane, one request per prefix (on a work queue: the unacknowledged ones)."""
        out: dict[int, int] = {}
        for prefix in self.spec.prefixes:
            with translate_nats_errors(f"stream {self.spec.stream}"):
                info = await self._link.js.stream_info(self.spec.stream, subjects_filter=f"{prefix}.*")
            for subject, n in (info.state.subjects or {}).items():
                tail = subject.rsplit(".", 1)[-1]
                if len(tail) == 2 and tail[0] == "p" and tail[1].isdigit():
                    out[int(tail[1])] = out.get(int(tail[1]), 0) + n
        return out

    async def _fetch_now(self, priority: int, batch: int) -> None:
        """One ``no_wait`` pull on lane ``priority``: what is free there arrives, then a 404 or the batch."""
        self._n += 1
        self._fetch_reply, self._fetch_got, self._fetch_end = f"{self._inbox}.{self._n}", 0, ""
        await self._link.nc.publish(self._next_subject(priority), b'{"batch":%d,"no_wait":true}' % batch,
                                    reply=self._fetch_reply)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(2.0, self.spec.fetch_timeout)
        while self._fetch_got < batch and not self._fetch_end and loop.time() < deadline:
            await self._wait(deadline - loop.time())
        if self._fetch_end not in ("", "404", "408"):
            self.last_error = f"lane p{priority}: pull answered {self._fetch_end}"
        self._fetch_reply = ""

    def _next_subject(self, priority: int) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.spec.stream}.{self.spec.name(priority)}"

    def _on_fetched(self, msg: Inbound) -> None:
        if msg.reply:
            self._buf.append(msg)
            self._fetch_got += 1
        elif msg.subject == self._fetch_reply and (status := status_of(msg)) != "100":
            self._fetch_end = status or "?"
        self._notify()

    # -- idle wait ---------------------------------------------------------------------------------
    async def _start_idle_wait(self, want: int) -> None:
        nc = self._link.nc
        self._n += 1
        prefix = f"{self._inbox}.w{self._n}"
        self._arm_left, self._arm_end = want, ""
        self._arm_reconnects = nc.stats["reconnects"]
        with translate_nats_errors("idle wait"):
            # Direct: what arrived before the withdrawal is in the buffer, to hand back; none of it is
            # left in nats-py's queue when the subscription goes (it would wait out ack_wait).
            self._arm = await direct_subscribe(nc, f"{prefix}.*", self._on_waited)
        expires = self.spec.idle_wait
        body = b'{"batch":%d,"expires":%d}' % (want, int(expires * 1e9))
        for p in PRIORITIES:
            await nc.publish(self._next_subject(p), body, reply=f"{prefix}.{p}")
        # The server ends every request with a 408 at expiry; silence well past it means they were lost.
        self._arm_deadline = asyncio.get_running_loop().time() + expires + max(1.0, expires / 2)

    async def _idle_wait(self, stopping: asyncio.Event) -> None:
        """Wait for a delivery; the wait ends at its expiry, when it was lost, or after a reconnect."""
        loop = asyncio.get_running_loop()
        self.fetching = True
        try:
            while not self._buf and not self._arm_end and not stopping.is_set():
                now = loop.time()
                if now >= self._arm_deadline:
                    self._arm_end = "lost"  # no answer at all: the requests were lost (consumer leader died)
                elif self._link.nc.stats["reconnects"] != self._arm_reconnects:
                    self._arm_end = "reconnected"  # the old connection's requests are gone with it
                else:
                    await self._wait(min(1.0, self._arm_deadline - now))
        finally:
            self.fetching = False
        if self._arm_end and not self._buf:
            end = self._arm_end
            await self._withdraw()
            if end not in ("408", "reconnected"):
                self.last_error = f"idle wait ended: {end}"
                log.debug("lanes %s: idle wait ended (%s)", self.spec.durable, end)
                if end == "lost":
                    await self._check_lanes()

    def _on_waited(self, msg: Inbound) -> None:
        if msg.reply:
            self._buf.append(msg)
            self._arm_left -= 1
        elif (status := status_of(msg)) != "100":
            self._arm_end = self._arm_end or status or "?"
        self._notify()

    async def _withdraw(self) -> None:
        """Drop the idle wait's subscription: the server discards the lanes' requests that are left."""
        arm, self._arm = self._arm, None
        if arm is not None:
            with contextlib.suppress(Exception):  # gone with the connection: the requests went with it
                await unsubscribe(arm)

    # -- common ------------------------------------------------------------------------------------
    async def _take(self, want: int) -> list[tuple[Inbound, Meta]]:
        """Up to ``want`` buffered deliveries; ends the idle wait once its slots are filled. More than
        asked for (sent in the instant before the withdrawal) goes back at once for another worker."""
        out = [(m, meta_of(m)) for m in (self._buf.popleft() for _ in range(min(want, len(self._buf))))]
        if self._arm is not None and (self._arm_left <= 0 or self._arm_end):
            await self._withdraw()
        if self._arm is None and self._buf:
            extra = list(self._buf)
            self._buf.clear()
            await self._hand_back(extra)
        if out:
            self._failures = 0
        return out

    async def _hand_back(self, msgs: list[Inbound]) -> None:
        for msg in msgs:
            if msg.reply:
                with contextlib.suppress(Exception):  # unacked anyway: redelivered after ack_wait
                    await nak(msg)

    def _notify(self) -> None:
        self._wake.set()

    async def _wait(self, timeout: float) -> None:
        await self._wake.wait(timeout)

    async def _failed(self, error: str, stopping: asyncio.Event) -> None:
        self._failures += 1
        self.last_error = error
        log.debug("lanes %s: %s", self.spec.durable, error)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff_delay(self._failures, base=0.1, cap=2.0))
        if not stopping.is_set() and self._link.is_connected and self._generation == self._link.generation:
            await self._check_lanes()

    async def _check_lanes(self) -> None:
        """A server restart can lose an R1 consumer: declare the lanes again (idempotent)."""
        try:
            await self.open()
        except Exception as exc:  # noqa: BLE001 - the next failure backs off further and tries again
            self.last_error = f"declare: {exc}"
