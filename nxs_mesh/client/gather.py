"""Scatter/gather: one TASK per payload to the live nodes with a capability, every subtask's end collected.

    results = await mesh.gather("resize", payloads, quorum=0.8, deadline=60, per_task_timeout=10)
    for sub in results:                      # input order
        print(sub.index, sub.state, sub.node, sub.result if sub.ok else sub.error)
    results.quorum_met                       # at least 80% completed

1. **Availability** from the nodes' own statuses (capabilities, state, load, queue depth) and their last
   heartbeat (younger than their ``dead_after``): with no live node for the capability it fails at once
   (``NoCapacity``) instead of queueing work nobody takes.
2. **Scatter**: every subtask is a normal TASK (a ``submitted`` record, then the work queue), with the
   gather's id as correlation id, so one subscription (``nxs.result.<gather id>``) hears them all, each
   RESULT naming its ``task_id``. Any capable worker takes any subtask; a dead worker's subtasks are
   re-run elsewhere by the claim fencing of ``node.tasks``, or end ``orphaned`` with no retry left.
3. **Gather** until every subtask ended, or the quorum completed (``quorum`` < 1), or the deadline. What
   is left then is ended, never left running: an unclaimed subtask ``expired`` at the deadline
   (``cancelled`` at quorum), a running one ``cancelled`` (its handler is cancelled on its worker). A
   subtask that ran longer than ``per_task_timeout`` since its claim is cancelled the same way.

Why not the sketch's ``nxs.result.<gather_id>.*`` subjects: the subject scheme allows one token after
``nxs.result``; one shared correlation id keeps the contract and still needs one subscription.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nxs_mesh.client.task_states import CANCELLED, EXPIRED, cancel_task, end_task
from nxs_mesh.client.task_store import COMPLETED, TERMINAL, TaskMesh, TaskStore, state_name
from nxs_mesh.client.task_submit import record_submitted
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, check_id, decode, new_envelope
from nxs_mesh.wire.errors import ConfigError, EnvelopeError, MeshError, NoCapacity, TaskStateError

__all__ = ["GatherProgress", "Gathered", "NodeLoad", "Subtask", "capable_nodes", "gather"]

_SUBMIT_AT_ONCE = 32  # subtasks submitted concurrently (records + publishes in flight)


@dataclass(frozen=True)
class Subtask:
    """How one subtask ended: ``state`` is completed, failed, expired, cancelled or orphaned."""

    index: int
    task_id: str
    state: str
    result: Any = None
    error: str | None = None
    node: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == COMPLETED


@dataclass(frozen=True)
class Gathered(Sequence[Subtask]):
    """Every subtask's end, in input order."""

    gather_id: str
    subtasks: tuple[Subtask, ...]
    quorum: float

    def __len__(self) -> int:
        return len(self.subtasks)

    def __iter__(self) -> Iterator[Subtask]:
        return iter(self.subtasks)

    def __getitem__(self, i: Any) -> Any:
        return self.subtasks[i]

    @property
    def completed(self) -> int:
        return sum(1 for s in self.subtasks if s.ok)

    @property
    def quorum_met(self) -> bool:
        return self.completed >= _needed(self.quorum, len(self.subtasks))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.subtasks:
            out[s.state] = out.get(s.state, 0) + 1
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items())) or "empty"
        return f"<Gathered {self.gather_id} [{counts}; quorum {'met' if self.quorum_met else 'not met'}]>"


@dataclass(frozen=True)
class NodeLoad:
    """A live node able to take the capability, as its status describes it."""

    node: str
    load: float
    queue_depth: int
    inflight: int


@dataclass
class GatherProgress:
    """What a progress display shows: totals, and per node how many subtasks it completed, failed, runs."""

    total: int
    ended: dict[str, int] = field(default_factory=dict)  # state -> count
    per_node: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> {"done", "failed", "running"}

    @property
    def finished(self) -> int:
        return sum(self.ended.values())


def _needed(quorum: float, total: int) -> int:
    return math.ceil(quorum * total - 1e-9)


async def capable_nodes(mesh: TaskMesh, capability: str) -> list[NodeLoad]:
    """The nodes whose last status says they run with ``capability`` and whose last heartbeat of that
    incarnation is younger than their ``dead_after``; least loaded first."""
    beats: dict[str, tuple[str, datetime]] = {}
    async for rec in mesh.tail("heartbeat"):
        env = rec.envelope
        if env is not None and isinstance(env.content, dict):
            beats[env.source.instance_id] = (str(env.content.get("epoch")), rec.stored_at)
    now, found = datetime.now(UTC), []
    async for rec in mesh.tail("status"):
        env = rec.envelope
        st = env.content if env is not None and isinstance(env.content, dict) else None
        if env is None or st is None or st.get("state") not in ("running", "degraded"):
            continue
        if capability not in (st.get("capabilities") or ()):
            continue
        beat = beats.get(env.source.instance_id)
        dead_after = float(st.get("dead_after") or 5.0)
        if beat is None or beat[0] != str(st.get("epoch")) or (now - beat[1]).total_seconds() > dead_after:
            continue
        found.append(NodeLoad(env.source.instance_id, float(st.get("load") or 0.0), int(st.get("queue_depth") or 0),
                              int(st.get("inflight") or 0)))
    return sorted(found, key=lambda n: (n.queue_depth + n.inflight, n.load, n.node))


def _check(payloads: Sequence[Any], quorum: float, deadline: float, per_task_timeout: float | None) -> None:
    if not 0 < quorum <= 1:
        raise ConfigError("quorum", f"must be within (0, 1], got {quorum}")
    if not deadline > 0:
        raise ConfigError("deadline", f"must be positive seconds, got {deadline}")
    if per_task_timeout is not None and not per_task_timeout > 0:
        raise ConfigError("per_task_timeout", f"must be positive seconds, got {per_task_timeout}")
    if isinstance(payloads, str | bytes):
        raise ConfigError("payloads", "must be a sequence of payloads, one per subtask (got a single string)")


class _Gathering:
    """The state of one gather: what ended, what is pending, and the one subscription."""

    def __init__(self, mesh: TaskMesh, store: TaskStore, ids: list[str], quorum: float,
                 on_progress: Callable[[GatherProgress], None] | None) -> None:
        self.mesh, self.store, self.ids, self.quorum = mesh, store, ids, quorum
        self.index = {t: i for i, t in enumerate(ids)}
        self.ended: dict[int, Subtask] = {}
        self.running: dict[str, str] = {}  # task id -> node, from the last poll of the records
        self.on_progress = on_progress

    @property
    def pending(self) -> list[str]:
        return [t for i, t in enumerate(self.ids) if i not in self.ended]

    def done(self) -> bool:
        if len(self.ended) == len(self.ids):
            return True
        completed = sum(1 for s in self.ended.values() if s.ok)
        return self.quorum < 1 and completed >= _needed(self.quorum, len(self.ids))

    def end(self, task_id: str, state: str, *, result: Any = None, error: str | None = None,
            node: str | None = None) -> None:
        i = self.index.get(task_id)
        if i is None or i in self.ended:
            return  # not ours, or told twice (a RESULT re-published after a lost ack)
        self.ended[i] = Subtask(i, task_id, state, result, error, node)
        self.running.pop(task_id, None)
        self.progress()

    def on_result(self, env: Envelope) -> None:
        meta = env.payload.metadata
        task_id = meta.get("task_id")
        if not isinstance(task_id, str):
            return
        ok = meta.get("ok") is not False
        said = meta.get("state")
        state = said if isinstance(said, str) else (COMPLETED if ok else "failed")
        node = meta.get("node") if isinstance(meta.get("node"), str) else env.source.instance_id
        self.end(task_id, state, result=env.content if ok else None,
                 error=None if ok else str(meta.get("error") or state), node=node)

    def progress(self) -> None:
        if self.on_progress is None:
            return
        report = GatherProgress(len(self.ids))
        for sub in self.ended.values():
            report.ended[sub.state] = report.ended.get(sub.state, 0) + 1
            if sub.node is not None:
                row = report.per_node.setdefault(sub.node, {"done": 0, "failed": 0, "running": 0})
                row["done" if sub.ok else "failed"] += 1
        for node in self.running.values():
            report.per_node.setdefault(node, {"done": 0, "failed": 0, "running": 0})["running"] += 1
        self.on_progress(report)

    def result(self, gather_id: str) -> Gathered:
        return Gathered(gather_id, tuple(self.ended[i] for i in range(len(self.ids))), self.quorum)


async def gather(
    mesh: TaskMesh, capability: str, payloads: Sequence[Any], *, quorum: float = 1.0, deadline: float = 60.0,
    per_task_timeout: float | None = None, priority: int = 1,
    on_progress: Callable[[GatherProgress], None] | None = None,
) -> Gathered:
    """See the module docstring; raises ``NoCapacity`` when no live node has ``capability``."""
    check_id(capability, "capability")
    _check(payloads, quorum, deadline, per_task_timeout)
    end_at = time.monotonic() + deadline
    if not await capable_nodes(mesh, capability):
        raise NoCapacity(capability)
    gather_id, store = str(uuid.uuid4()), await mesh.task_store()
    g = _Gathering(mesh, store, [str(uuid.uuid4()) for _ in payloads], quorum, on_progress)
    reply = subjects.result(gather_id)
    waiter = await mesh.link.reply_waiter(reply, max_msgs=0)  # before the first subtask goes out
    screen = mesh.security.result_check(None)
    try:
        await _scatter(mesh, capability, payloads, g, gather_id, reply, ttl=max(1, math.ceil(deadline)),
                       priority=priority)
        g.progress()
        poll_every = min(0.5, per_task_timeout / 4) if per_task_timeout else (0.5 if on_progress else None)
        next_poll = time.monotonic() + (poll_every or deadline)
        while not g.done() and (now := time.monotonic()) < end_at:
            try:
                data, headers = await waiter.next_message(max(0.001, min(end_at, next_poll) - now))
            except TimeoutError:
                if poll_every is not None and time.monotonic() >= next_poll:
                    await _poll(g, per_task_timeout)
                    next_poll = time.monotonic() + poll_every
                continue
            try:
                env = decode(data)
            except EnvelopeError:
                continue
            if screen is not None and (await screen(env, reply, data, headers))[0] is None:
                continue  # forged or unverifiable (secure mode)
            g.on_result(env)
        await _end_leftovers(g, at_deadline=len(g.ended) < len(g.ids) and not g.done())
    finally:
        await waiter.close()
    return g.result(gather_id)


async def _scatter(mesh: TaskMesh, capability: str, payloads: Sequence[Any], g: _Gathering, gather_id: str,
                   reply: str, *, ttl: int, priority: int) -> None:
    """Record every submission (concurrently), then queue the TASKs in input order (pipelined when no
    grant must travel with them), so the work queue hands them out in that order."""
    sem = asyncio.Semaphore(_SUBMIT_AT_ONCE)
    facts = {"capability": capability, "ttl": ttl, "reply": reply, "corr": gather_id, "gather": gather_id}

    async def record(task_id: str) -> None:
        async with sem:
            await record_submitted(mesh, g.store, task_id, **facts)

    await asyncio.gather(*(record(t) for t in g.ids))
    envs = [new_envelope("TASK", p, source=mesh.source, priority=priority, ttl=ttl, metadata={"capability": capability},
                         correlation_id=gather_id, reply_to=reply, message_id=t) for t, p in zip(g.ids, payloads, strict=True)]
    if mesh.grant is None:
        await mesh.publish_many(envs)
        return
    for env in envs:
        await mesh.send(env)


async def _poll(g: _Gathering, per_task_timeout: float | None) -> None:
    """Read the pending subtasks' records: who runs what (progress), and who ran too long (cancelled)."""
    pending = g.pending
    records = await asyncio.gather(*(g.store.get(t) for t in pending), return_exceptions=True)
    now = time.time()
    for task_id, got in zip(pending, records, strict=True):
        if isinstance(got, BaseException):
            continue
        record = got[0]
        if record is None or record.get("state") != "claimed":
            g.running.pop(task_id, None)
            continue
        g.running[task_id] = str(record.get("node"))
        if per_task_timeout is not None and now - float(record.get("at") or now) > per_task_timeout:
            await _stop(g, task_id, CANCELLED, f"ran longer than per_task_timeout {per_task_timeout}s")
    g.progress()


async def _end_leftovers(g: _Gathering, *, at_deadline: bool) -> None:
    """End every subtask still pending: an unclaimed one ``expired`` at the deadline (``cancelled`` once
    the quorum is met), a running one ``cancelled`` on its worker."""
    unclaimed = EXPIRED if at_deadline else CANCELLED
    why = "the gather's deadline passed" if at_deadline else "the gather's quorum was met"
    await asyncio.gather(*(_stop(g, t, unclaimed, why) for t in g.pending))


async def _stop(g: _Gathering, task_id: str, unclaimed: str, why: str) -> None:
    for _ in range(5):
        record, rev = await g.store.get(task_id)
        state = record.get("state") if record is not None else None
        if record is not None and state in TERMINAL:
            _settle_from(g, task_id, record)  # it ended on its own meanwhile; its RESULT says the same
            return
        try:
            if state == "claimed":
                ended: dict[str, Any] | None = await cancel_task(g.mesh, task_id, g.store)
                how = CANCELLED
            else:
                ended = await end_task(g.mesh, g.store, task_id, unclaimed, record=record, rev=rev,
                                       error=f"task {task_id} {unclaimed}: {why}")
                how = unclaimed
        except (TaskStateError, MeshError):
            continue  # raced with its end or a claim: look again
        if ended is not None:
            g.end(task_id, how, error=f"task {task_id} {how}: {why}", node=ended.get("worker"))
            return
    g.end(task_id, CANCELLED, error=f"task {task_id}: could not be ended ({why}); its record kept changing")


def _settle_from(g: _Gathering, task_id: str, record: dict[str, Any]) -> None:
    state = state_name(str(record.get("state")))
    ok = state == COMPLETED and not record.get("error")
    g.end(task_id, state if ok or state != COMPLETED else "failed", result=record.get("result") if ok else None,
          error=None if ok else str(record.get("error") or state), node=record.get("worker") or record.get("node"))
