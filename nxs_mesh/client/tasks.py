"""Tasks from the caller's side: submit, status, cancel and scatter/gather (mixed into ``Mesh``).

    ack, _ = await submit_task(mesh, "resize", {"w": 64})        # client.task_submit
    await mesh.task_status(ack.message_id)                       # {"state": "claimed", "node": ...}
    await mesh.cancel(ack.message_id)                            # one RESULT: metadata.state "cancelled"
    results = await mesh.gather("resize", [{"w": 64}, {"w": 128}], quorum=1.0, deadline=60)

A submitted task's submission is recorded first (``client.task_store``: who sent it, when, its ttl and
where its RESULT goes), so that anyone can end it properly later: a cancel knows whom to answer and
whether it may, an expiry knows when it is due.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nxs_mesh.client.gather import Gathered, GatherProgress, gather
from nxs_mesh.client.task_states import cancel_task, task_status
from nxs_mesh.client.task_store import TaskMesh, TaskStore
from nxs_mesh.wire.contract import DEFAULT_PRIORITY

__all__ = ["Tasks"]


class Tasks:
    """``task_store``, ``task_status``, ``cancel`` and ``gather``; needs the ``Mesh`` it is mixed into."""

    _task_store: TaskStore | None = None

    async def task_store(self) -> TaskStore:
        """The NXS_TASKS records (bound once per Mesh)."""
        if self._task_store is None:
            self._task_store = await TaskStore.open(self._as_mesh())
        return self._task_store

    async def task_status(self, task_id: str) -> dict[str, Any]:
        """The task's record: ``state`` (submitted, claimed, completed, failed, expired, cancelled, orphaned),
        ``node``, ``delivery`` (attempts), times, ``result`` or ``error``."""
        return await task_status(self._as_mesh(), task_id, await self.task_store())

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task, unclaimed (it never runs) or running (its handler is cancelled on its worker); its
        caller gets one RESULT with ``metadata.state`` ``cancelled``. ``TaskStateError`` if it already ended."""
        return await cancel_task(self._as_mesh(), task_id, await self.task_store())

    async def gather(
        self, capability: str, payloads: Sequence[Any], *, quorum: float = 1.0, deadline: float = 60.0,
        per_task_timeout: float | None = None, priority: int = DEFAULT_PRIORITY,
        on_progress: Callable[[GatherProgress], None] | None = None,
    ) -> Gathered:
        """Run one TASK per payload on the live nodes with ``capability`` and collect every subtask's end,
        in input order (``client.gather``)."""
        return await gather(self._as_mesh(), capability, payloads, quorum=quorum, deadline=deadline,
                            per_task_timeout=per_task_timeout, priority=priority, on_progress=on_progress)

    def _as_mesh(self) -> TaskMesh:
        return self  # type: ignore[return-value]  # mixed into Mesh only
