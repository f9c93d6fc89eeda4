"""Work distribution that survives node death: claims, fencing, prompt redelivery, results once.

TASKs go to ``nxs.task.<capability>.p<priority>`` in the work-queue stream NXS_TASK. Every worker
with the capability pulls from the same shared durable consumers, one per priority (``transport.lanes``:
``task-<capability>`` for the default priority, ``task-<capability>-p<n>`` for the others), taking
the most urgent stored task whenever it has a free slot and never holding a task it has not
started; exactly-once handling (``client.exactly_once``) keeps a redelivered task from reaching a
second handler while its first one runs or after it finished. The ack wait is long (30 s)
because live workers send in-progress acks; what makes a dead worker's task come back *promptly*
is the Doctor, and what keeps it *exactly once* is a fencing token:

1. **Claim.** A worker that receives task ``T`` compare-and-sets the key ``t.<T>`` in the KV bucket
   NXS_TASKS: create it, or update it from the revision it just read. The new revision is the
   worker's fencing token. A record already ``done`` means the task finished before (a lost ack):
   the worker re-publishes its RESULT (same deterministic id, so stored once) and acks.
2. **Advertise.** The worker adds ``(T, ack subject of this delivery)`` to its claims and sends a
   heartbeat at once; every heartbeat carries the current claims.
3. **Work.** The handler runs; the consumer keeps the delivery alive with in-progress acks.
4. **Complete.** The worker compare-and-sets ``t.<T>`` to ``done`` *from its token*. Only the
   current owner can do that, so a worker that was declared dead and comes back late (paused,
   partitioned) with a stale result fails the CAS: it is fenced, publishes nothing and leaves the
   message alone (neither ack nor nak, which would disturb the new owner's delivery). The winner
   publishes the RESULT (``Nats-Msg-Id`` derived from ``T``) and acks.

**Redistribution.** When the Doctor declares a node dead it takes the claims from that node's last
heartbeat and publishes ``-NAK`` to each claim's ack subject: JetStream redelivers the message to
a live worker right away instead of after the ack wait. With several doctors watching, one does it:
the one that wins ``create`` of ``r.<node>.<epoch>.<heartbeat seq>`` in the same bucket. A task
claimed in the instant between a worker's claim and its heartbeat falls back to the ack wait; any
double delivery (a stale nak, an ack wait expiring under a stalled worker) is harmless, because
completion is the CAS above.

The guarantee is one *completion* (one ``done`` record, one RESULT); a handler may have *started*
on a worker that then died, so its side effects should be idempotent or keyed by the task id.

**Every task ends once** (``client.task_states``): ``done`` as above, ``failed`` (CAS from the token on
the last attempt), or ended by someone else: ``cancelled`` (the canceller's CAS; its ``cancel-task``
nudge makes this worker cancel the handler's asyncio task, ack, and publish nothing), ``expired`` or
``orphaned`` (the Doctor's hook, ``node.task_ends``, or this worker for a delivery past
``max_deliver``). A completion CAS that finds such an end acks with nothing published.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nxs_mesh.aio.retry import retrying
from nxs_mesh.client.calls import build_result, correlation_of
from nxs_mesh.client.consumer import Consumer, durable_name
from nxs_mesh.client.delivery import Delivery
from nxs_mesh.client.mesh import Mesh, PublishResult
from nxs_mesh.client.task_states import (
    CANCEL_COMMAND,
    CANCELLED,
    ORPHANED,
    cancel_believed,
    end_task,
    is_terminal,
)
from nxs_mesh.client.task_store import BUCKET, TERMINAL, TaskStore, state_name
from nxs_mesh.client.task_submit import submit_task
from nxs_mesh.node.authorize import Authorizer
from nxs_mesh.node.handlers import Context, Registry, call_handler
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import result_subject
from nxs_mesh.wire.envelope import Envelope, check_id
from nxs_mesh.wire.errors import Abandon, ConfigError, HandlerSignal, MeshError, Reject
from nxs_mesh.wire.ids import result_id

__all__ = ["BUCKET", "TERMINAL", "TaskRunner", "TaskStore", "result_id", "submit_task"]

log = logging.getLogger("nxs_mesh.node.tasks")


@dataclass(frozen=True)
class _Owner:
    node: str
    epoch: str


class _CancelledOnRequest(Exception):
    """The handler was cancelled because its task was (``cancel-task``): ack, publish nothing."""


class TaskRunner:
    """Runs the task consumers of one worker and keeps the claims its heartbeats advertise."""

    def __init__(
        self,
        mesh: Mesh,
        store: TaskStore,
        registry: Registry,
        *,
        epoch: str,
        capabilities: tuple[str, ...],
        ack_wait: float = 30.0,
        concurrency: int = 1,
        fetch_timeout: float = 2.0,
        on_claims: Callable[[], Awaitable[None]] | None = None,
        status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        start_timeout: float = 60.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.mesh, self.store, self.registry = mesh, store, registry
        self.start_timeout = start_timeout
        self.owner = _Owner(mesh.config.instance_id, epoch)
        self.capabilities = capabilities
        self.ack_wait, self.concurrency, self.fetch_timeout = ack_wait, concurrency, fetch_timeout
        self.claims: dict[str, str] = {}  # task id -> ack subject of the delivery we hold
        self.consumers: list[Consumer] = []
        self.completed = 0
        self.fenced = 0
        self.cancelled = 0
        self._on_claims = on_claims
        self._status = status
        self._on_change = on_change
        self.result_failures = 0
        self.authorizer = Authorizer(mesh)
        # Handlers running now: task id -> (their asyncio task, the task's submitter); a cancel asks here.
        self._running: dict[str, tuple[asyncio.Task[Any], str]] = {}
        self._cancelling: set[str] = set()

    async def start(self) -> None:
        self.registry.add_command(CANCEL_COMMAND, self._on_cancel)
        for cap in self.capabilities:
            check_id(cap, "capability")
            if cap not in self.registry.tasks:
                raise ConfigError("capabilities", f"no task handler for capability {cap!r}")

            async def consume(cap: str = cap) -> Consumer:
                return await self.mesh.consume(
                    "task", self._handle, durable=durable_name("task", cap), filters=[f"{subjects.ROOT}.task.{cap}.>"],
                    ack_wait=self.ack_wait, batch=self.concurrency, concurrency=self.concurrency, lanes=True,
                    exactly_once=True, fetch_timeout=self.fetch_timeout, on_change=self._on_change,
                )

            self.consumers.append(await retrying(consume, f"task consumer {cap}", timeout=self.start_timeout))

    async def stop(self, grace: float) -> None:
        await asyncio.gather(*(c.stop(grace) for c in self.consumers))

    @property
    def inflight(self) -> int:
        return len(self.claims)

    async def _handle(self, env: Envelope, delivery: Delivery) -> None:
        cap = env.payload.metadata.get("capability")
        if not isinstance(cap, str) or cap not in self.registry.tasks:
            raise Reject(f"no handler for capability {cap!r} on {self.owner.node}")
        task_id = env.id
        record, rev = await self.store.get(task_id)
        refusal = self.authorizer.refusal("task", cap, env, delivery)
        if refusal is not None:  # dead-lettered, so no other worker gets it: it ends here
            await end_task(self.mesh, self.store, task_id, "failed", record=record or self._carried(env), rev=rev,
                           error=refusal)
            raise Reject(refusal)
        if record is not None and record.get("state") == "done":
            # Finished before but the ack was lost: make sure the RESULT exists, then ack.
            await self._publish_result(env, record.get("result"), record)
            return
        if is_terminal(record) and not self._forged_cancel(record, env):  # type: ignore[arg-type]
            log.info("task %s: %s before it ran; acking it unrun", task_id, record["state"])  # type: ignore[index]
            return  # its one RESULT was published by whoever ended it
        if delivery.deliveries > self.mesh.config.max_deliver:
            # Every allowed attempt went to workers that died holding it (a live failure would have ended it
            # failed): orphaned, as the Doctor's hook would say; whichever CAS wins publishes the RESULT.
            if await end_task(self.mesh, self.store, task_id, ORPHANED, record=record, rev=rev,
                              error=f"task {task_id} orphaned: its workers died on all {delivery.deliveries - 1} "
                                    "attempts") is not None:
                log.warning("task %s: delivery %d is past max_deliver; ended it orphaned", task_id, delivery.deliveries)
            return
        claim = {**self._carried(env), "state": "claimed", "node": self.owner.node, "epoch": self.owner.epoch,
                 "delivery": delivery.deliveries, "max_deliver": self.mesh.config.max_deliver, "at": time.time()}
        token = await self.store.cas(task_id, claim, rev)
        if token is None:
            log.info("task %s: claimed by someone else meanwhile; leaving it", task_id)
            raise Abandon()
        self.claims[task_id] = delivery.ack_subject
        if self._on_claims is not None:
            try:
                await self._on_claims()  # an immediate heartbeat: doctors learn the claim before work starts
            except MeshError as exc:
                log.debug("claim heartbeat failed: %s", exc)  # the regular heartbeat carries it anyway
        ctx = Context(self.owner.node, env, delivery, mesh=self.mesh, status=self._status,
                      extra={"task_id": task_id, "token": token})
        try:
            try:
                result = await self._run(task_id, env, call_handler(self.registry.tasks[cap], env.content, ctx))
            except _CancelledOnRequest:
                self.cancelled += 1
                log.info("task %s: cancelled while running; its handler was stopped", task_id)
                return  # acked: the canceller published its one RESULT
            except HandlerSignal:
                raise
            except Exception as exc:  # a failing handler: it ends failed on its last attempt, else delivery retries
                if delivery.deliveries >= self.mesh.config.max_deliver:
                    await end_task(self.mesh, self.store, task_id, "failed", record=claim, rev=token,
                                   error=f"{type(exc).__name__}: {exc}")
                raise
            await self._complete(env, claim, token, result)
        finally:
            self.claims.pop(task_id, None)

    def _forged_cancel(self, record: dict[str, Any], env: Envelope) -> bool:
        """A ``cancelled`` record written by someone who may not cancel this task (secure mode): ignored."""
        if record.get("state") != CANCELLED or cancel_believed(self.store, record, env.source.instance_id):
            return False
        log.warning("task %s: ignoring a cancel by %s, neither its submitter %s nor the admin", env.id,
                    record.get("node"), env.source.instance_id)
        return True

    @staticmethod
    def _carried(env: Envelope) -> dict[str, Any]:
        """What every record of the task keeps: who submitted it, where its RESULT goes, what it is."""
        return {"submitter": env.source.instance_id, "reply": result_subject(env), "corr": correlation_of(env),
                "capability": env.payload.metadata.get("capability")}

    async def _run(self, task_id: str, env: Envelope, handler: Awaitable[Any]) -> Any:
        """Run the handler as its own asyncio task, so that a cancel of the task stops just the handler."""
        task = asyncio.ensure_future(handler)  # owned here: awaited below, cancelled with us
        self._running[task_id] = (task, env.source.instance_id)
        try:
            return await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task_id in self._cancelling and (me is None or not me.cancelling()):
                raise _CancelledOnRequest() from None
            raise
        finally:
            self._running.pop(task_id, None)
            self._cancelling.discard(task_id)

    async def _on_cancel(self, args: Any, ctx: Context) -> dict[str, Any]:
        """The ``cancel-task`` command: stop the handler of a task whose record says cancelled (the nudge
        itself proves nothing; the signed record does)."""
        task_id = args.get("task_id") if isinstance(args, dict) else None
        running = self._running.get(task_id) if isinstance(task_id, str) else None
        if running is None:
            return {"task_id": task_id, "cancelled": False, "why": "not running here"}
        record, _ = await self.store.get(task_id)  # type: ignore[arg-type]
        task, submitter = running
        if record is None or record.get("state") != CANCELLED or not cancel_believed(self.store, record, submitter):
            return {"task_id": task_id, "cancelled": False, "why": "its record does not say cancelled"}
        self._cancelling.add(task_id)  # type: ignore[arg-type]
        task.cancel()
        return {"task_id": task_id, "cancelled": True}

    async def _complete(self, env: Envelope, claim: dict[str, Any], token: int, result: Any) -> None:
        """Record the task done (CAS from our token, retried through elections), then publish its RESULT.
        Once done is recorded, a RESULT that cannot be stored is logged: re-running the task would not
        mend it, and a redelivery finds the done record and publishes it again. A task that ended
        meanwhile (cancelled, orphaned) is acked with nothing published; another claim fences us."""
        error = _unsendable(result)
        done = {**claim, "state": "done", "result": None if error else result, "finished": time.time(),
                **({"error": error} if error else {})}
        won = await retrying(lambda: self.store.cas(env.id, done, token), f"task {env.id} completion", timeout=30)
        if won is None:
            now, _ = await self.store.get(env.id)
            if is_terminal(now) and now is not None and now.get("state") != "done":
                log.info("task %s ended %s while it ran; dropping our result", env.id, now["state"])
                return
            self.fenced += 1
            log.warning("task %s: fenced (another worker owns it now); dropping our stale result", env.id)
            raise Abandon()
        self.completed += 1
        try:
            await self._publish_result(env, done["result"], done, error=error)
        except MeshError as exc:
            self.result_failures += 1
            log.error("task %s done, but its RESULT cannot be stored: %s", env.id, exc)

    async def _publish_result(
        self, env: Envelope, result: Any, record: dict[str, Any], *, error: str | None = None
    ) -> PublishResult:
        return await self.mesh.send(build_result(
            env, result, source=self.mesh.source, error=error, ttl=0, message_id=result_id(env.id),
            task_id=env.id, node=record.get("node"), capability=env.payload.metadata.get("capability"),
            state=state_name("failed" if error else str(record.get("state", "done"))),
        ), subject=result_subject(env))


def _unsendable(result: Any) -> str | None:
    """Why a handler's result cannot travel in a RESULT (and a claim record), or None."""
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"the handler's result cannot be sent: {exc}"
    return None
