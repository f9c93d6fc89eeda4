"""How a task ends: every move to a terminal state is a compare-and-set that publishes exactly one RESULT.

A task record (``client.task_store``) ends once: ``done`` (completed; the worker, from its fencing
token), ``failed`` (the worker, on the last attempt), ``cancelled`` (``cancel_task``: its submitter or
the admin), ``expired`` (its ttl passed before any worker claimed it: whoever looks first, see
``expire_if_due``) or ``orphaned`` (the Doctor's death hook: its worker died on the last delivery
JetStream allows). The writer that wins the CAS publishes the RESULT, on the task's reply subject,
with the deterministic id ``result_id(task)``: ``metadata.state`` says how it ended, ``metadata.ok`` and
``metadata.error`` are as they always were, so an existing caller sees a ``RemoteError``. Whoever loses
the CAS publishes nothing: the caller is told once.

A cancelled *running* task is also cancelled on its worker: the canceller sends the claimer a
``cancel-task`` COMMAND (a nudge; the signed record is the authority, so the nudge needs no rights of
its own), and the worker cancels the handler's asyncio task, acks the delivery and publishes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from nxs_mesh.aio.retry import retrying
from nxs_mesh.client.task_store import TERMINAL, TaskMesh, TaskStore, state_name
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, new_envelope
from nxs_mesh.wire.errors import MeshError, TaskStateError
from nxs_mesh.wire.ids import result_id

__all__ = ["CANCELLED", "CANCEL_COMMAND", "EXPIRED", "ORPHANED", "cancel_task", "end_task", "expire_if_due",
           "cancel_believed", "is_terminal", "orphan_claims", "task_result", "task_status"]

log = logging.getLogger("nxs_mesh.client.task_states")

CANCELLED: Final = "cancelled"
EXPIRED: Final = "expired"
ORPHANED: Final = "orphaned"
#: The command a canceller sends the worker of a running task (``node.tasks`` handles it).
CANCEL_COMMAND: Final = "cancel-task"
_NOT_COPIED = ("sig", "signer")  # a record's signature is the writer's, never carried into the next one


def is_terminal(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("state") in TERMINAL


def task_result(task_id: str, record: dict[str, Any], *, source: Any, result: Any = None,
                error: str | None = None) -> tuple[Envelope, str]:
    """The one RESULT of a task that ended as ``record`` says, and the subject it goes to."""
    state = str(record.get("state"))
    meta: dict[str, Any] = {"ok": error is None, "state": state_name(state), "task_id": task_id,
                            "node": record.get("worker") or record.get("node"), "capability": record.get("capability")}
    if error is not None:
        meta["error"] = error
    reply = record.get("reply")
    subject = reply if isinstance(reply, str) and reply.startswith(subjects.result("")) else subjects.result(task_id)
    corr = record.get("corr")
    env = new_envelope("RESULT", result, source=source, correlation_id=corr if isinstance(corr, str) else task_id,
                       metadata=meta, message_id=result_id(task_id), ttl=0)
    return env, subject


_SUBMITTED_FACTS = ("submitter", "reply", "corr", "capability", "ttl")


async def end_task(mesh: TaskMesh, store: TaskStore, task_id: str, state: str, *, record: dict[str, Any] | None,
                   rev: int, error: str | None = None, result: Any = None, **extra: Any) -> dict[str, Any] | None:
    """CAS the record from revision ``rev`` to the terminal ``state`` and publish its RESULT; the new
    record, or None when someone else moved it first (then nothing is published). An unclaimed task
    (``record`` None) takes where its RESULT goes from its submission, when there is one."""
    me = mesh.config.instance_id
    if record is None:
        sub = await store.submission(task_id) or {}
        old = {k: sub[k] for k in _SUBMITTED_FACTS if k in sub} | ({"submitted": sub["at"]} if "at" in sub else {})
    else:
        old = {k: v for k, v in record.items() if k not in _NOT_COPIED}
    if old.get("state") == "claimed" and old.get("node") != me:
        old["worker"] = old.get("node")  # the record's writer is us now; the worker stays on record
    ended = {**old, "state": state, "node": me, "finished": time.time(), **extra}
    if error is not None:
        ended["error"] = error
    if await store.cas(task_id, ended, rev) is None:
        return None
    env, subject = task_result(task_id, ended, source=mesh.source, result=result, error=error)
    try:
        await retrying(lambda: mesh.send(env, subject=subject), f"RESULT of task {task_id}", timeout=30)
    except MeshError as exc:  # the record says how it ended; a status read shows it
        log.error("task %s %s, but its RESULT cannot be stored: %s", task_id, state, exc)
    return ended


def cancel_believed(store: TaskStore, record: dict[str, Any], submitter: str) -> bool:
    """Whether a worker honours a ``cancelled`` record of a task ``submitter`` sent: with a trust file,
    only when the record's (verified) writer is that submitter or the admin; without one, always."""
    return not store.checks_signers or record.get("node") == submitter or store.signed_by_admin(record)


async def cancel_task(mesh: TaskMesh, task_id: str, store: TaskStore | None = None) -> dict[str, Any]:
    """Cancel ``task_id``, unclaimed or running; returns the cancelled record. ``TaskStateError`` when it
    already ended, or (with a trust file) when this identity is neither its submitter nor the admin.
    Exactly one caller wins (CAS), and it publishes the RESULT; a running task's worker is told."""
    sec = mesh.security
    if sec.secure and sec.signer is None:
        # Workers of a secure mesh ignore an unsigned record: the task would run after its caller was told
        # "cancelled". Refuse instead.
        raise TaskStateError(f"task {task_id}: this identity has no signing key, and a secure mesh's workers "
                             "ignore an unsigned cancel", task_id)
    store = store or await TaskStore.open(mesh)
    me = mesh.config.instance_id
    admin = sec.trust is not None and sec.signer is not None and sec.trust.is_admin(sec.signer.public)
    for _ in range(5):  # lost races with a claim, a completion or another cancel re-read the record
        record, rev = await store.get(task_id)
        if is_terminal(record):
            raise TaskStateError(f"task {task_id} already ended: {state_name(record['state'])}", task_id)  # type: ignore[index]
        submitter = (record or await store.submission(task_id) or {}).get("submitter")
        if sec.trust is not None and submitter not in (None, me) and not admin:
            raise TaskStateError(f"task {task_id} was submitted by {submitter}: only it or the admin may cancel it",
                                 task_id)
        worker = record.get("node") if record is not None and record.get("state") == "claimed" else None
        ended = await end_task(mesh, store, task_id, CANCELLED, record=record, rev=rev,
                               error=f"task {task_id} cancelled", by=me)
        if ended is not None:
            if worker is not None:
                await _nudge(mesh, worker, task_id)
            return {"task_id": task_id, **ended, "state": CANCELLED}
    raise TaskStateError(f"task {task_id}: its record kept changing; try again", task_id)


async def _nudge(mesh: TaskMesh, worker: str, task_id: str) -> None:
    """Tell the worker of a running task to cancel its handler (best effort: the record already says
    cancelled, so the worker's result is fenced whatever happens to this message)."""
    try:
        await mesh.publish("COMMAND", {"command": CANCEL_COMMAND, "args": {"task_id": task_id}}, to=worker,
                           priority=9, ttl=300)
    except MeshError as exc:
        log.warning("task %s cancelled, but its worker %s could not be told: %s", task_id, worker, exc)


def _due(submission: dict[str, Any], now: float) -> bool:
    ttl, at = submission.get("ttl"), submission.get("at")
    return isinstance(ttl, int | float) and ttl > 0 and isinstance(at, int | float) and now >= at + ttl


async def expire_if_due(mesh: TaskMesh, store: TaskStore, task_id: str, record: dict[str, Any] | None,
                        rev: int) -> dict[str, Any] | None:
    """End an unclaimed task (``record`` None) whose ttl, by its submission, has passed: ``expired``, one
    RESULT. None when it is claimed, not due, has no submission, or someone else moved it first."""
    if record is not None:
        return None
    sub = await store.submission(task_id)
    if sub is None or not _due(sub, time.time()):
        return None
    return await end_task(mesh, store, task_id, EXPIRED, record=None, rev=rev,
                          error=f"task {task_id} expired: no worker took it within its ttl of {sub['ttl']}s")


async def task_status(mesh: TaskMesh, task_id: str, store: TaskStore | None = None) -> dict[str, Any]:
    """The record of ``task_id`` as a dict with at least ``task_id`` and ``state`` (``submitted`` when no
    worker has claimed it yet, with what its submitter recorded; an unclaimed task past its ttl is
    ended ``expired`` by this read)."""
    store = store or await TaskStore.open(mesh)
    record, rev = await store.get(task_id)
    record = await expire_if_due(mesh, store, task_id, record, rev) or record
    if record is None:
        sub = {k: v for k, v in (await store.submission(task_id) or {}).items() if k not in _NOT_COPIED}
        return {"task_id": task_id, **sub, "state": "submitted"}
    return {"task_id": task_id, **record, "state": state_name(str(record["state"]))}


async def orphan_claims(mesh: TaskMesh, store: TaskStore, node: str, epoch: str, task_ids: list[str]) -> list[str]:
    """End ``orphaned`` each task the dead ``node`` (incarnation ``epoch``) held on the last delivery
    JetStream allows (``max_deliver``): no worker will get it again. Others are left to redelivery."""
    ended = []
    for task_id in task_ids:
        record, rev = await store.get(task_id)
        if (record is None or record.get("state") != "claimed" or record.get("node") != node
                or record.get("epoch") != epoch
                or int(record.get("delivery", 0)) < int(record.get("max_deliver", mesh.config.max_deliver))):
            continue
        why = f"task {task_id} orphaned: its worker {node} died on its last delivery ({record.get('delivery')})"
        if await end_task(mesh, store, task_id, ORPHANED, record=record, rev=rev, error=why) is not None:
            ended.append(task_id)
    return ended
