"""Work distribution that survives node death: claims, fencing, prompt redelivery, results once.

TASKs go to ``nxs.task.<capability>.p<priority>`` in the work-queue stream NXS_TASK. Every worker
with the capability pulls from one shared durable consumer ``task-<capability>`` (``batch`` =
``concurrency``, so a worker never holds tasks it has not started). The ack wait is long (30 s)
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

from nats.js import api as jsapi
from nats.js import errors as jse

from nxs_mesh.aio.retry import retrying
from nxs_mesh.client.consumer import Abandon, Consumer, ConsumerSpec, Delivery, Reject
from nxs_mesh.client.mesh import Mesh, PublishResult
from nxs_mesh.node.handlers import Context, Registry, call_handler
from nxs_mesh.transport.translate import translate_nats_errors
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import DEFAULT_PRIORITY, TASK_TTL
from nxs_mesh.wire.envelope import Envelope, check_id
from nxs_mesh.wire.errors import ConfigError

__all__ = ["BUCKET", "TaskRunner", "TaskStore", "result_id", "submit_task"]

log = logging.getLogger("nxs_mesh.node.tasks")

BUCKET: Final = "NXS_TASKS"
_RESULT_NS: Final = uuid.UUID("6c1f9a52-7d0e-4b8e-9a55-6e1c3c2f6a01")


def result_id(task_id: str) -> str:
    """The RESULT message id of a task: deterministic, so a re-publish is deduplicated."""
    return str(uuid.uuid5(_RESULT_NS, f"result:{task_id}"))


def kv_safe(value: str) -> str:
    return value.replace(":", "=")  # ids may hold ':', KV keys may not


class TaskStore:
    """The NXS_TASKS key-value bucket: claim records with fencing, and doctor elections."""

    def __init__(self, kv: Any) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, mesh: Mesh, *, replicas: int | None = None) -> TaskStore:
        with translate_nats_errors(f"bucket {BUCKET}"):
            try:
                kv = await mesh.js.key_value(BUCKET)
            except jse.BucketNotFoundError:
                n = replicas or mesh.config.replicas or await mesh.cluster_size()
                kv = await mesh.js.create_key_value(
                    jsapi.KeyValueConfig(bucket=BUCKET, history=1, ttl=86400.0, replicas=min(3, n),
                                         description="task claims (fencing) and doctor elections"))
        return cls(kv)

    async def get(self, task_id: str) -> tuple[dict[str, Any] | None, int]:
        with translate_nats_errors("task claim read"):
            try:
                entry = await self._kv.get(f"t.{task_id}")
            except (jse.KeyNotFoundError, jse.KeyDeletedError):
                return None, 0
        try:
            return json.loads(entry.value or b"{}"), int(entry.revision or 0)
        except ValueError:
            return None, int(entry.revision or 0)

    async def cas(self, task_id: str, record: dict[str, Any], last: int) -> int | None:
        """Write ``record`` if the key is still at revision ``last`` (0 = absent); None if not."""
        data = json.dumps(record, separators=(",", ":")).encode()
        with translate_nats_errors("task claim write"):
            try:
                if last == 0:
                    return int(await self._kv.create(f"t.{task_id}", data))
                return int(await self._kv.update(f"t.{task_id}", data, last=last))
            except jse.KeyWrongLastSequenceError:
                return None

    async def elect(self, key: str, who: str) -> bool:
        """True for exactly one caller of ``key`` (within the bucket's ttl)."""
        with translate_nats_errors("election"):
            try:
                await self._kv.create(kv_safe(key), who.encode())
                return True
            except jse.KeyWrongLastSequenceError:
                # Ours already if an earlier attempt was stored but its answer was lost.
                entry = await self._kv.get(kv_safe(key))
                return bool(entry.value == who.encode())


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
        node: Any = None,
        start_timeout: float = 60.0,
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
        self._node = node

    async def start(self) -> None:
        for cap in self.capabilities:
            check_id(cap, "capability")
            if cap not in self.registry.tasks:
                raise ConfigError("capabilities", f"no task handler for capability {cap!r}")
            consumer = Consumer(
                self.mesh.nc, self.mesh.js,
                ConsumerSpec(
                    stream="NXS_TASK", durable=f"task-{kv_safe(cap).replace('=', '-')}",
                    filters=[f"{subjects.ROOT}.task.{cap}.>"], ack_wait=self.ack_wait,
                    max_deliver=self.mesh.config.max_deliver, batch=self.concurrency,
                    concurrency=self.concurrency, fetch_timeout=self.fetch_timeout,
                    dlq_instance=self.owner.node,
                ),
                self._handle,
            )
            await retrying(consumer.start, f"task consumer {cap}", timeout=self.start_timeout)
            self.consumers.append(consumer)

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
        if record is not None and record.get("state") == "done":
            # Finished before but the ack was lost: make sure the RESULT exists, then ack.
            await self._publish_result(env, record.get("result"), record)
            return
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
            except Exception as exc:  # noqa: BLE001 - the regular heartbeat carries it anyway
                log.debug("claim heartbeat failed: %r", exc)
        ctx = Context(self.owner.node, env, delivery, self._node, {"task_id": task_id, "token": token})
        try:
            try:
                result = await call_handler(self.registry.tasks[cap], env.content, ctx)
            except (Abandon, Reject):
                raise
            except Exception as exc:
                if delivery.deliveries >= self.mesh.config.max_deliver:
                    await self._publish_result(env, None, {"node": self.owner.node},
                                               error=f"{type(exc).__name__}: {exc}")
                raise
            done = {**claim, "state": "done", "result": result, "finished": time.time()}
            if await self.store.cas(task_id, done, token) is None:
                self.fenced += 1
                log.warning("task %s: fenced (another worker owns it now); dropping our stale result", task_id)
                raise Abandon()
            self.completed += 1
            await self._publish_result(env, result, done)
        finally:
            self.claims.pop(task_id, None)

    async def _publish_result(
        self, env: Envelope, result: Any, record: dict[str, Any], *, error: str | None = None
    ) -> PublishResult:
        corr = env.correlation_id if isinstance(env.correlation_id, str) else env.id
        metadata: dict[str, Any] = {"ok": error is None, "task_id": env.id, "node": record.get("node"),
                                    "capability": env.payload.metadata.get("capability")}
        if error is not None:
            metadata["error"] = error
        return await self.mesh.publish(
            "RESULT", result, to=env.source.instance_id, agent=env.source.agent_id, correlation_id=corr,
            metadata=metadata, message_id=result_id(env.id) if error is None else None, ttl=0,
        )


async def submit_task(
    mesh: Mesh,
    capability: str,
    payload: Any,
    *,
    priority: int = DEFAULT_PRIORITY,
    ttl: int = TASK_TTL,
    wait: bool = False,
    timeout: float = 60.0,
) -> tuple[PublishResult, Envelope | None]:
    """Queue a TASK for any worker with ``capability``; with ``wait``, also wait for its RESULT."""
    task_id = str(uuid.uuid4())
    publish: dict[str, Any] = {"capability": capability, "priority": priority, "ttl": ttl, "message_id": task_id}
    if not wait:
        ack = await mesh.publish(
            "TASK", payload, correlation_id=task_id, reply_to=subjects.result(task_id), **publish
        )
        return ack, None
    ack, env = await mesh.call(
        "TASK", payload, correlation_id=task_id, timeout=timeout,
        waiting_for=f"result of task {task_id} ({capability})", **publish,
    )
    return ack, env
