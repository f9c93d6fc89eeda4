"""A running durable consumer: the pull protocol (``transport.pull``) feeding the delivery policy
(``client.delivery``), in one supervised loop.

    consumer = await mesh.consume("command", handler)   # returns once subscribed
    consumer.state                                      # ConsumerState.RUNNING / DEGRADED / ...
    await consumer.stop(grace=10)                       # stop fetching, finish in-flight work

A loop that dies (the connection was reopened under it, an ack failed) is logged with its cause;
the consumer is ``DEGRADED`` until its supervisor has restarted it and it has run a while.

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
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.pull import PullSession, PullSpec
from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import Abandon, BrokenError, ClosedError, Reject, Retry

__all__ = [
    "Abandon", "Consumer", "ConsumerSpec", "ConsumerState", "Delivery", "Handler", "Reject", "Retry", "durable_name",
]

_LOOP = "pull"


def durable_name(*parts: str) -> str:
    """The one rule for durable consumer names: parts joined by '-', ':' as '-', '*' as 'all'."""
    name = "-".join(p.replace(":", "-").replace("*", "all") for p in parts)
    check_id(name.replace("_", "-"), "durable")
    return name


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

    def pull_spec(self) -> PullSpec:
        return PullSpec(self.stream, self.durable, tuple(self.filters), self.ack_wait, self.batch, self.fetch_timeout)

    def policy_spec(self) -> PolicySpec:
        return PolicySpec(self.durable, self.max_deliver, self.concurrency, self.ack_wait, self.backoff_base,
                          self.backoff_cap, self.dedup_size, self.dlq_instance)


class Consumer:
    """A running durable pull consumer. Made by ``Mesh.consume``; stop it with ``stop()``."""

    def __init__(self, link: Link, spec: ConsumerSpec, handler: Handler, *,
                 on_change: Callable[[], None] | None = None, once: OnceGuard | None = None) -> None:
        self._link, self.spec = link, spec
        self._sup = Supervisor(f"consumer {spec.durable}", on_change=on_change)
        self._policy = DeliveryPolicy(link, spec.policy_spec(), handler, self._sup, once)
        self._session: PullSession | None = None
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
        self._session = PullSession(self._link, self.spec.pull_spec())
        await self._session.open()
        self._state = ConsumerState.RUNNING
        self._sup.keep(_LOOP, self._run)
        return self

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

        report = await consumer_report(self._link, self.spec.stream, self.spec.durable)
        return report.backlog if report is not None else 0

    async def _run(self) -> None:
        """The loop its supervisor keeps: a new pull session after the link was reopened."""
        while not self._stopping.is_set():
            session = self._session
            if session is None:
                session = PullSession(self._link, self.spec.pull_spec())
                await session.open()
                self._session = session
            try:
                msgs = await session.next_batch(self._stopping)
            except BrokenError:
                self._session = None
                await session.close()
                raise
            if msgs:
                await self._policy.dispatch(msgs)
