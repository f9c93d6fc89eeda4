"""A running durable consumer: the pull protocol (``transport.pull``) feeding the delivery policy
(``client.delivery``), in one supervised loop.

    consumer = await mesh.consume("command", handler)   # returns once subscribed
    consumer.state                                      # ConsumerState.RUNNING / DEGRADED / ...
    await consumer.stop(grace=10)                       # stop fetching, finish in-flight work

A loop that dies (the connection was reopened under it, an ack failed) is logged with its cause;
the consumer is ``DEGRADED`` until its supervisor has restarted it and it has run a while.

Three ways to take work, by the spec:

- default: run what has arrived sorted by priority while the next requests are on their way (a
  backlog streams: ``transport.pull``; ``Mesh.consume``'s fast path);
- ``window`` > 0: a ``PriorityWindow`` keeps up to ``window`` deliveries in hand and starts the most
  urgent whenever a slot frees (a node's COMMAND consumer: a backlog runs by priority);
- ``lanes``: one consumer per priority (``transport.lanes``), the most urgent stored message taken
  when a slot frees, nothing held (TASK work queues, shared by workers).

With an ``OnceGuard`` the consumer group handles each message once (``client.exactly_once``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.client.delivery import Delivery, DeliveryPolicy, DeliveryStats, Handler, PolicySpec
from nxs_mesh.client.exactly_once import OnceGuard
from nxs_mesh.client.security import MessageSecurity
from nxs_mesh.client.window import PriorityWindow
from nxs_mesh.transport.lanes import LanePull, LaneSpec
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.pull import PullSession, PullSpec
from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import Abandon, BrokenError, ClosedError, ConfigError, Reject, Retry

__all__ = [
    "Abandon", "Consumer", "ConsumerSpec", "ConsumerState", "Delivery", "Handler", "Reject", "Retry", "durable_name",
    "lane_prefixes",
]

_LOOP = "pull"
_HOLD = "keep waiting deliveries alive"


def durable_name(*parts: str) -> str:
    """The one rule for durable consumer names: parts joined by '-', ':' as '-', '*' as 'all'."""
    name = "-".join(p.replace(":", "-").replace("*", "all") for p in parts)
    check_id(name.replace("_", "-"), "durable")
    return name


# Tokens before the priority token, by kind (DESIGN.md section 4): nxs.task.<cap>.p<n>,
# nxs.command.<to>.<agent>.p<n>.
_BEFORE_PRIORITY = {"task": 3, "command": 4}


def lane_prefixes(kind: str, filters: Sequence[str]) -> tuple[str, ...]:
    """The lane prefixes of ``filters`` ("nxs.task.resize.>" -> "nxs.task.resize"): lane n of the
    consumer filters on "<prefix>.p<n>"."""
    width = _BEFORE_PRIORITY.get(kind.lower())
    if width is None:
        raise ConfigError("lanes", f"{kind!r} subjects carry no priority; lanes are for task and command")
    out = []
    for f in filters:
        tokens = f.split(".")
        if tokens[-1] == ">":
            tokens = tokens[:-1] + ["*"] * (width - len(tokens) + 1)
        if len(tokens) != width or ">" in tokens:
            raise ConfigError("lanes", f"filter {f!r} does not end where the priority token starts")
        out.append(".".join(tokens))
    return tuple(out)


class ConsumerState(enum.StrEnum):
    NEW = "new"
    RUNNING = "running"
    DEGRADED = "degraded"  # its loop died and is being restarted
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filters: Sequence[str]
    ack_wait: float = 30.0
    max_deliver: int = 5
    batch: int = 32
    concurrency: int = 1
    fetch_timeout: float = 1.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    dedup_size: int = 10_000
    dlq_instance: str = "unknown"
    #: > 0: keep up to this many deliveries in hand, started by priority as slots free (PriorityWindow).
    window: int = 0
    #: Non-empty: one consumer per priority, lane n filtering on "<prefix>.p<n>" (transport.lanes).
    lanes: tuple[str, ...] = ()

    def pull_spec(self) -> PullSpec:
        return PullSpec(self.stream, self.durable, tuple(self.filters), self.ack_wait, self.batch, self.fetch_timeout)

    def lane_spec(self) -> LaneSpec:
        return LaneSpec(self.stream, self.durable, tuple(self.lanes), self.ack_wait, self.fetch_timeout)

    def policy_spec(self) -> PolicySpec:
        return PolicySpec(self.durable, self.max_deliver, self.concurrency, self.ack_wait, self.backoff_base,
                          self.backoff_cap, self.dedup_size, self.dlq_instance)


class Consumer:
    """A running durable pull consumer. Made by ``Mesh.consume``; stop it with ``stop()``."""

    def __init__(self, link: Link, spec: ConsumerSpec, handler: Handler, *,
                 on_change: Callable[[], None] | None = None, once: OnceGuard | None = None,
                 security: MessageSecurity | None = None) -> None:
        self._link, self.spec = link, spec
        self._sup = Supervisor(f"consumer {spec.durable}", on_change=on_change)
        self._policy = DeliveryPolicy(link, spec.policy_spec(), handler, self._sup, once, security)
        self._window: PriorityWindow | None = None
        if spec.window > 0 or spec.lanes:
            # Lanes hand out the most urgent first and never more than asked: nothing waits in hand.
            size = spec.concurrency if spec.lanes else spec.window
            self._window = PriorityWindow(self._policy, window=size, concurrency=spec.concurrency, tasks=self._sup)
        self._session: PullSession | LanePull | None = None
        self._stopping = asyncio.Event()
        self._state = ConsumerState.NEW

    def __repr__(self) -> str:
        s = self.stats
        return (f"<Consumer {self.spec.stream}/{self.spec.durable} {self.state.name} "
                f"[handled {s.handled}, dead {s.dead_lettered}, inflight {self.inflight}]>")

    @property
    def state(self) -> ConsumerState:
        if self._state is ConsumerState.RUNNING and self._sup.problems:
            return ConsumerState.DEGRADED
        return self._state

    @property
    def problems(self) -> dict[str, str]:
        return self._sup.problems

    @property
    def stats(self) -> DeliveryStats:
        return self._policy.stats

    @property
    def inflight(self) -> int:
        return self._policy.inflight

    async def start(self) -> Consumer:
        """Create or update the durable consumer and start delivering; returns once subscribed."""
        if self._state is not ConsumerState.NEW:
            raise ClosedError(f"{self!r} cannot be started twice")
        self._session = self._new_session()
        await self._session.open()
        self._state = ConsumerState.RUNNING
        self._sup.keep(_LOOP, self._run)
        window = self._window
        if window is not None and window.window > window.concurrency:
            self._sup.keep(_HOLD, lambda: window.keep_alive(max(0.2, self.spec.ack_wait / 3)))
        return self

    def _new_session(self) -> PullSession | LanePull:
        if self.spec.lanes:
            return LanePull(self._link, self.spec.lane_spec())
        return PullSession(self._link, self.spec.pull_spec())

    async def stop(self, grace: float = 10.0) -> None:
        """Stop fetching, let in-flight handlers finish (up to ``grace`` s), then unsubscribe."""
        if self._state in (ConsumerState.STOPPED, ConsumerState.NEW):
            self._state = ConsumerState.STOPPED
            return
        self._state = ConsumerState.STOPPING
        self._stopping.set()
        task = self._sup.task(_LOOP)
        session = self._session
        if task is not None and not task.done() and not (session is not None and session.fetching):
            # Work in hand: let it finish. Idle in a long poll: nothing is in hand, so cancel at once
            # (anything the server sent meanwhile is unacked and is redelivered; nothing is lost).
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), grace)
        if self._window is not None:
            if task is not None:
                task.cancel()  # it only fetches: the window holds the work
            await self._window.drain(grace)
        await self._sup.stop(timeout=0)
        if self._session is not None:
            await self._session.close()
        self._state = ConsumerState.STOPPED

    async def wait(self) -> None:
        """Wait until the consumer stops (for workers that just consume)."""
        task = self._sup.task(_LOOP)
        if task is not None:
            await asyncio.shield(task)

    async def queue_depth(self) -> int:
        """Messages waiting for this consumer or delivered and not yet acknowledged (asks the server)."""
        from nxs_mesh.transport.admin import consumer_report

        session = self._session or self._new_session()
        depth = 0
        for durable in session.durables:
            report = await consumer_report(self._link, self.spec.stream, durable)
            depth += report.backlog if report is not None else 0
        return depth

    async def _run(self) -> None:
        """The loop its supervisor keeps: a new pull session after the link was reopened."""
        window = self._window
        while not self._stopping.is_set():
            session = self._session
            if session is None:
                session = self._new_session()
                await session.open()
                self._session = session
            try:
                if window is None:
                    msgs = await session.next_batch(self._stopping)
                else:
                    await window.wait_room(self._stopping)
                    if self._stopping.is_set():
                        return
                    msgs = await session.next_batch(self._stopping, window.room)
            except BrokenError:
                self._session = None
                await session.close()
                raise
            if not msgs:
                continue
            if window is None:
                await self._policy.dispatch(msgs)
            else:
                await window.offer(msgs)
