"""Submitting a TASK: its submission first (``s.<task id>`` in NXS_TASKS: who sent it, when, its ttl,
where its RESULT goes), then the work queue; with ``wait``, the one RESULT (``client.task_states``).

    ack, _ = await submit_task(mesh, "resize", {"w": 64})        # any worker with the capability
    ack, result = await submit_task(mesh, "resize", {"w": 64}, wait=True, timeout=30)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from nxs_mesh.client.calls import Accept
from nxs_mesh.client.publishing import PublishResult
from nxs_mesh.client.task_states import expire_if_due
from nxs_mesh.client.task_store import TaskMesh, TaskStore
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import DEFAULT_PRIORITY, TASK_TTL
from nxs_mesh.wire.envelope import Envelope
from nxs_mesh.wire.errors import MeshError

__all__ = ["record_submitted", "submit_task"]


async def submit_task(
    mesh: TaskMesh,
    capability: str,
    payload: Any,
    *,
    priority: int = DEFAULT_PRIORITY,
    ttl: int = TASK_TTL,
    wait: bool = False,
    timeout: float = 60.0,
    task_id: str | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
) -> tuple[PublishResult, Envelope | None]:
    """Queue a TASK for any worker with ``capability``; with ``wait``, also wait for its RESULT (a
    ``CallEnded`` error when it ends failed, cancelled, expired or orphaned).
    ``task_id`` (a UUID; default a fresh one) makes a resubmission harmless: the same id is stored once.
    ``reply_to``/``correlation_id``: where the RESULT goes (default ``nxs.result.<task_id>``)."""
    task_id = task_id or str(uuid.uuid4())
    corr = correlation_id or task_id
    reply = reply_to or subjects.result(corr)
    store = await mesh.task_store()
    await record_submitted(mesh, store, task_id, capability=capability, ttl=ttl, reply=reply, corr=corr)
    publish: dict[str, Any] = {"capability": capability, "priority": priority, "ttl": ttl, "message_id": task_id}
    if not wait:
        ack = await mesh.publish("TASK", payload, correlation_id=corr, reply_to=reply, **publish)
        return ack, None
    expiry = asyncio.ensure_future(_expire_at(mesh, store, task_id, ttl)) if 0 < ttl < timeout else None
    try:
        ack, env = await mesh.call(
            "TASK", payload, correlation_id=corr, timeout=timeout,
            waiting_for=f"result of task {task_id} ({capability})",
            accept=_claimer_check(mesh, task_id) if mesh.security.secure else None, **publish,
        )
    finally:
        if expiry is not None:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError, MeshError):
                await expiry
    return ack, env


async def record_submitted(mesh: TaskMesh, store: TaskStore, task_id: str, **fields: Any) -> None:
    """The submission (``s.<task id>``, written once: a resubmission keeps the first)."""
    me = mesh.config.instance_id
    await store.record_submission(task_id, {"node": me, "submitter": me, "at": time.time(), **fields})


async def _expire_at(mesh: TaskMesh, store: TaskStore, task_id: str, ttl: float) -> None:
    """A waiting caller ends its own task ``expired`` once its ttl passed unclaimed (the RESULT wakes it)."""
    await asyncio.sleep(ttl)  # sleep-ok: the task's ttl is the deadline this waits for
    while True:
        record, rev = await store.get(task_id)
        if record is not None:
            return  # claimed (or ended) in time
        if await expire_if_due(mesh, store, task_id, record, rev) is not None:
            return
        await asyncio.sleep(0.2)  # sleep-ok: lost a race with a claim or not quite due: look again


def _claimer_check(mesh: TaskMesh, task_id: str) -> Accept:
    """A task's result is believed only from the node whose signed claim record holds the task (a
    verified signature alone would let any node of the mesh answer for any task). A failure (``ok``
    false: refused, no handler, cancelled) carries no result to forge: its verified signature is enough."""

    async def accept(env: Envelope, subject: str, data: bytes, headers: dict[str, str] | None) -> tuple[bool, str]:
        if env.payload.metadata.get("ok") is False:
            return True, ""
        record, _ = await (await mesh.task_store()).get(task_id)
        if record is None or record.get("node") != env.source.instance_id:
            return False, f"no claim of task {task_id} signed by {env.source.instance_id!r}"
        return True, ""

    return accept
