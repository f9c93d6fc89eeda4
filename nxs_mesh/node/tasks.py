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
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from nxs_mesh.aio.retry import retrying
from nxs_mesh.client.admin import Bucket, BucketSpec
from nxs_mesh.client.calls import Accept, build_result
from nxs_mesh.client.consumer import Consumer, durable_name
from nxs_mesh.client.delivery import Delivery
from nxs_mesh.client.mesh import Mesh, PublishResult
from nxs_mesh.client.security import MessageSecurity
from nxs_mesh.node.authorize import Authorizer
from nxs_mesh.node.handlers import Context, Registry, call_handler
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import DEFAULT_PRIORITY, TASK_TTL, result_subject
from nxs_mesh.wire.envelope import Envelope, check_id
from nxs_mesh.wire.errors import Abandon, ConfigError, HandlerSignal, MeshError, Reject
from nxs_mesh.wire.ids import result_id
from nxs_mesh.wire.signing import record_signed_by, sign_record

__all__ = ["BUCKET", "TERMINAL", "TaskRunner", "TaskStore", "result_id", "submit_task"]

log = logging.getLogger("nxs_mesh.node.tasks")

BUCKET: Final = "NXS_TASKS"
#: The end states of a task record (``node.task_states``); ``done`` is the record's name for completed.
TERMINAL: Final = frozenset({"done", "failed", "expired", "cancelled", "orphaned"})

def kv_safe(value: str) -> str:
    return value.replace(":", "=")  # ids may hold ':', KV keys may not


class TaskStore:
    """The NXS_TASKS key-value bucket: claim records with fencing, and doctor elections."""

    def __init__(self, bucket: Bucket, security: MessageSecurity | None = None) -> None:
        self._bucket, self._security = bucket, security

    def __repr__(self) -> str:
        return f"<TaskStore {self._bucket.name}>"

    @classmethod
    async def open(cls, mesh: Mesh, *, replicas: int | None = None) -> TaskStore:
        spec = BucketSpec(BUCKET, ttl=86400.0, description="task claims (fencing) and doctor elections")
        return cls(await mesh.admin.bucket(spec, replicas=replicas), mesh.security)

    async def get(self, task_id: str) -> tuple[dict[str, Any] | None, int]:
        """The claim record of ``task_id`` and its revision; a record its claimer did not sign (when the
        mesh has a trust file: a forged claim or ``done``) reads as absent, so the next claim replaces it."""
        entry = await self._bucket.get(f"t.{task_id}")
        if entry is None:
            return None, 0
        try:
            record = json.loads(entry.value or b"{}")
        except ValueError:
            return None, entry.revision
        if not isinstance(record, dict) or not self._believes(f"t.{task_id}", record, entry.value):
            log.warning("task %s: ignoring a claim record its claimer did not sign (%s)", task_id,
                        record.get("node") if isinstance(record, dict) else "not an object")
            return None, entry.revision
        return record, entry.revision

    def _believes(self, key: str, record: dict[str, Any], value: bytes) -> bool:
        sec = self._security
        if sec is None or sec.trust is None or ("sig" not in record and not sec.secure):
            return True  # no keys to check against, or an unsigned record in an open mesh
        node, signer = record.get("node"), record.get("signer")
        return (isinstance(node, str) and isinstance(signer, str) and signer == sec.trust.signer_of(node)
                and record_signed_by(signer, key, value))

    async def cas(self, task_id: str, record: dict[str, Any], last: int) -> int | None:
        """Write ``record`` if the key is still at revision ``last`` (0 = absent); None if not. Signed by
        this node when it has a key (``wire.signing.sign_record``)."""
        sec = self._security
        signer = sec.signer if sec is not None else None
        if signer is not None:
            body = json.dumps({**record, "signer": signer.public}, separators=(",", ":")).encode()
            data = sign_record(signer, f"t.{task_id}", body)
        else:
            data = json.dumps(record, separators=(",", ":")).encode()
        if last == 0:
            return await self._bucket.create(f"t.{task_id}", data)
        return await self._bucket.update(f"t.{task_id}", data, last=last)

    async def elect(self, key: str, who: str) -> bool:
        """True for exactly one caller of ``key`` (within the bucket's ttl)."""
        safe = kv_safe(key)
        if await self._bucket.create(safe, who.encode()) is not None:
            return True
        # Ours already if an earlier attempt was stored but its answer was lost.
        entry = await self._bucket.get(safe)
        return entry is not None and entry.value == who.encode()


@dataclass(frozen=True)
class _Owner:
    node: str
    epoch: str


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
        self._on_claims = on_claims
        self._status = status
        self._on_change = on_change
        self.result_failures = 0
        self.authorizer = Authorizer(mesh)

    async def start(self) -> None:
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
        refusal = self.authorizer.refusal("task", cap, env, delivery)
        if refusal is not None:
            await self._publish_result(env, None, {"node": self.owner.node}, error=refusal)
            raise Reject(refusal)
        task_id = env.id
        record, rev = await self.store.get(task_id)
        if record is not None and record.get("state") == "done":
            # Finished before but the ack was lost: make sure the RESULT exists, then ack.
            await self._publish_result(env, record.get("result"), record)
            return
        if record is not None and record.get("state") in TERMINAL:
            log.info("task %s: %s before it ran; acking it unrun", task_id, record["state"])
            return  # its one RESULT was published by whoever ended it
        claim = {"state": "claimed", "node": self.owner.node, "epoch": self.owner.epoch,
                 "delivery": delivery.deliveries, "at": time.time()}
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
                result = await call_handler(self.registry.tasks[cap], env.content, ctx)
            except HandlerSignal:
                raise
            except Exception as exc:  # a failing handler: report on its last attempt, then let delivery retry
                if delivery.deliveries >= self.mesh.config.max_deliver:
                    await self._publish_result(env, None, {"node": self.owner.node},
                                               error=f"{type(exc).__name__}: {exc}")
                raise
            await self._complete(env, claim, token, result)
        finally:
            self.claims.pop(task_id, None)

    async def _complete(self, env: Envelope, claim: dict[str, Any], token: int, result: Any) -> None:
        """Record the task done (CAS from our token, retried through elections), then publish its RESULT.
        Once done is recorded, a RESULT that cannot be stored is logged: re-running the task would not
        mend it, and a redelivery finds the done record and publishes it again."""
        error = _unsendable(result)
        done = {**claim, "state": "done", "result": None if error else result, "finished": time.time(),
                **({"error": error} if error else {})}
        won = await retrying(lambda: self.store.cas(env.id, done, token), f"task {env.id} completion", timeout=30)
        if won is None:
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
            env, result, source=self.mesh.source, error=error, ttl=0,
            message_id=result_id(env.id) if error is None else None,
            task_id=env.id, node=record.get("node"), capability=env.payload.metadata.get("capability"),
        ), subject=result_subject(env))


def _unsendable(result: Any) -> str | None:
    """Why a handler's result cannot travel in a RESULT (and a claim record), or None."""
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"the handler's result cannot be sent: {exc}"
    return None


async def submit_task(
    mesh: Mesh,
    capability: str,
    payload: Any,
    *,
    priority: int = DEFAULT_PRIORITY,
    ttl: int = TASK_TTL,
    wait: bool = False,
    timeout: float = 60.0,
    task_id: str | None = None,
) -> tuple[PublishResult, Envelope | None]:
    """Queue a TASK for any worker with ``capability``; with ``wait``, also wait for its RESULT.
    ``task_id`` (a UUID; default a fresh one) makes a resubmission harmless: the same id is stored once."""
    task_id = task_id or str(uuid.uuid4())
    publish: dict[str, Any] = {"capability": capability, "priority": priority, "ttl": ttl, "message_id": task_id}
    if not wait:
        ack = await mesh.publish(
            "TASK", payload, correlation_id=task_id, reply_to=subjects.result(task_id), **publish
        )
        return ack, None
    ack, env = await mesh.call(
        "TASK", payload, correlation_id=task_id, timeout=timeout,
        waiting_for=f"result of task {task_id} ({capability})",
        accept=_claimer_check(mesh, task_id) if mesh.security.secure else None, **publish,
    )
    return ack, env


def _claimer_check(mesh: Mesh, task_id: str) -> Accept:
    """A task's result is believed only from the node whose signed claim record holds the task (a
    verified signature alone would let any node of the mesh answer for any task). A failure (``ok``
    false: refused, no handler) comes from a worker that may hold no claim: its verified signature is
    enough, since it carries no result to forge."""
    store: list[TaskStore] = []

    async def accept(env: Envelope, subject: str, data: bytes, headers: dict[str, str] | None) -> tuple[bool, str]:
        if env.payload.metadata.get("ok") is False:
            return True, ""
        if not store:
            store.append(await TaskStore.open(mesh))
        record, _ = await store[0].get(task_id)
        if record is None or record.get("node") != env.source.instance_id:
            return False, f"no claim of task {task_id} signed by {env.source.instance_id!r}"
        return True, ""

    return accept
