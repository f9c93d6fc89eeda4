"""Terminal task states (issue 11 part 4, first step): cancel a task and read its status.

A task record in NXS_TASKS (``node.tasks``) moves submitted -> ``claimed`` -> one terminal state. This
step adds ``cancelled`` for a task not yet claimed: ``cancel_task`` compare-and-sets the record (create
when absent, update from the revision it read), and only the winner of that CAS publishes the one
RESULT (``metadata.state`` = ``cancelled``, ``ok`` false, ``error`` saying so, so existing callers see a
``RemoteError``). A worker that later receives the task finds the terminal record and acks it without
running the handler. Cancelling a *running* task (cancelling the handler on its worker) is not done yet:
a claimed task is refused with ``TaskStateError``.
"""

from __future__ import annotations

import time
from typing import Any, Final

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.node.tasks import TERMINAL, TaskStore
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import new_envelope
from nxs_mesh.wire.errors import TaskStateError
from nxs_mesh.wire.ids import result_id

__all__ = ["CANCELLED", "TERMINAL", "cancel_task", "is_terminal", "task_status"]

CANCELLED: Final = "cancelled"


def is_terminal(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("state") in TERMINAL


async def task_status(mesh: Mesh, task_id: str, store: TaskStore | None = None) -> dict[str, Any]:
    """The record of ``task_id`` as a dict with at least ``task_id`` and ``state`` (``submitted`` when no
    worker has claimed it and nobody cancelled it: the queue does not say whether it exists)."""
    store = store or await TaskStore.open(mesh)
    record, _ = await store.get(task_id)
    return {"task_id": task_id, "state": "submitted", **(record or {})}


async def cancel_task(mesh: Mesh, task_id: str, store: TaskStore | None = None) -> dict[str, Any]:
    """Cancel ``task_id`` before it is claimed; returns the cancelled record. Raises ``TaskStateError``
    when it already ended or is running. Exactly one caller wins (CAS), and it publishes the RESULT."""
    sec = mesh.security
    if sec.secure and sec.signer is None:
        # Workers of a secure mesh ignore an unsigned record: the task would run after its caller was told
        # "cancelled". Refuse instead.
        raise TaskStateError(f"task {task_id}: this identity has no signing key, and a secure mesh's workers "
                             "ignore an unsigned cancel", task_id)
    store = store or await TaskStore.open(mesh)
    for _ in range(5):  # lost races with a claim or another cancel re-read the record
        record, rev = await store.get(task_id)
        if is_terminal(record):
            raise TaskStateError(f"task {task_id} already ended: {record['state']}", task_id)  # type: ignore[index]
        if record is not None and record.get("state") == "claimed":
            raise TaskStateError(f"task {task_id} is running on {record.get('node')}: cancelling a running "
                                 "task is not supported yet", task_id)
        cancelled = {"state": CANCELLED, "node": mesh.config.instance_id, "at": time.time(),
                     "by": mesh.config.instance_id}
        if await store.cas(task_id, cancelled, rev) is not None:
            await _publish_cancelled(mesh, task_id)
            return {"task_id": task_id, **cancelled}
    raise TaskStateError(f"task {task_id}: its record kept changing; try again", task_id)


async def _publish_cancelled(mesh: Mesh, task_id: str) -> None:
    meta = {"ok": False, "error": f"task {task_id} cancelled", "state": CANCELLED, "task_id": task_id}
    env = new_envelope("RESULT", None, source=mesh.source, correlation_id=task_id, metadata=meta,
                       message_id=result_id(task_id), ttl=0)
    await mesh.send(env, subject=subjects.result(task_id))
