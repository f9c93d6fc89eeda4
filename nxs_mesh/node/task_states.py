"""Terminal task states, as the node layer knew them: they live in ``client.task_states`` now (a caller's
``Mesh.cancel``/``Mesh.task_status`` need them, and the client sits below the node)."""

from __future__ import annotations

from nxs_mesh.client.task_states import CANCELLED, cancel_task, is_terminal, task_status
from nxs_mesh.client.task_store import TERMINAL

__all__ = ["CANCELLED", "TERMINAL", "cancel_task", "is_terminal", "task_status"]
