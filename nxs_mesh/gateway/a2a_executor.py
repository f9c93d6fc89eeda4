"""The A2A SDK's ``AgentExecutor`` for one mesh agent: an A2A message becomes a mesh COMMAND or TASK.

The A2A task id is the mesh correlation id (the RESULT comes on ``nxs.result.<task id>``; a ``task:``
skill's TASK has that id as its task id), and the A2A context id travels as the envelope's
``metadata.a2a_context_id`` (a conversation: the agent sees every message of one context under it).
States: submitted, working once the mesh took it, then completed (the RESULT, as an artifact),
failed (a remote error, a timeout, an agent with no owner), or canceled.

Cancel: the SDK cancels ``execute`` (the wait for the RESULT ends) and calls ``cancel``; for a TASK the
mesh is told too when it can cancel tasks (``TaskCancel``: the tasks work's ``Mesh.cancel``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from a2a.helpers import get_data_parts, new_data_part, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Part, Task, TaskState, TaskStatus

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.gateway.a2a_cards import COMMAND_SKILL, DEFAULT_SKILL, TASK_SKILL
from nxs_mesh.node.tasks import submit_task
from nxs_mesh.wire.envelope import Envelope
from nxs_mesh.wire.errors import MeshError

__all__ = ["CONTEXT_KEY", "MESH_STATE", "MeshAgentExecutor", "TaskCancel"]

log = logging.getLogger("nxs_mesh.gateway.a2a")

#: The envelope metadata key that carries the A2A context id (the conversation).
CONTEXT_KEY = "a2a_context_id"
#: Where the caller's ``Mesh`` sits in the SDK's ``ServerCallContext.state`` (``gateway.a2a``).
MESH_STATE = "nxs_mesh"
#: ``(mesh, task_id) -> None``: tells the mesh a TASK is cancelled (None: the mesh cannot; only the wait ends).
TaskCancel = Callable[[Mesh, str], Awaitable[Any]]


def default_cancel(mesh: Mesh) -> TaskCancel | None:
    """``Mesh.cancel`` when this mesh has it (the tasks work), else None."""
    cancel = getattr(mesh, "cancel", None)
    if cancel is None:
        return None

    async def call(_: Mesh, task_id: str) -> Any:
        return await cancel(task_id)

    return call


class MeshAgentExecutor(AgentExecutor):
    """Runs the messages sent to one agent; ``timeout`` bounds the wait for each answer."""

    def __init__(self, agent: str, *, timeout: float, cancel: TaskCancel | None = None) -> None:
        self.agent = agent
        self.timeout = timeout
        self._cancel = cancel

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None and context.message is not None
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        if context.current_task is None:
            await event_queue.enqueue_event(Task(id=context.task_id, context_id=context.context_id,
                                                 status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                                                 history=[context.message]))
        mesh = context.call_context.state[MESH_STATE]
        skill = str(dict(context.message.metadata).get("skill") or DEFAULT_SKILL)
        await updater.start_work()
        try:
            content, node = await self._run(mesh, skill, context)
        except MeshError as exc:
            await updater.failed(updater.new_agent_message([new_text_part(str(exc))]))
            return
        await updater.add_artifact([_part(content)], name="result", metadata={"node": node} if node else None)
        await updater.complete()

    async def _run(self, mesh: Mesh, skill: str, context: RequestContext) -> tuple[Any, str | None]:
        assert context.task_id is not None and context.message is not None
        args = _args(context)
        meta = {CONTEXT_KEY: context.context_id}
        if skill.startswith(TASK_SKILL):
            _, result = await submit_task(mesh, skill.removeprefix(TASK_SKILL), args, wait=True, timeout=self.timeout,
                                          ttl=max(1, int(self.timeout)), task_id=context.task_id)
            assert result is not None
            return _answer(result)
        if not skill.startswith(COMMAND_SKILL):
            raise MeshError(f"unknown skill {skill!r}: use {COMMAND_SKILL}<name> or {TASK_SKILL}<capability>")
        owner = await mesh.agents.resolve(self.agent)
        command = skill.removeprefix(COMMAND_SKILL)
        _, env = await mesh.call("COMMAND", {"command": command, "args": args}, correlation_id=context.task_id,
                                 timeout=self.timeout, waiting_for=f"{self.agent} to answer {command!r}",
                                 to=owner, agent=self.agent, ttl=max(1, int(self.timeout)), metadata=meta)
        return _answer(env)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        mesh = context.call_context.state.get(MESH_STATE)
        cancel = self._cancel or (default_cancel(mesh) if mesh is not None else None)
        task = context.current_task
        skill = str(dict(task.history[0].metadata).get("skill") or "") if task is not None and task.history else ""
        if cancel is not None and mesh is not None and skill.startswith(TASK_SKILL):
            try:
                await cancel(mesh, context.task_id)
            except MeshError as exc:  # it ended meanwhile: the A2A task is cancelled all the same
                log.info("a2a: cancelling mesh task %s: %s", context.task_id, exc)
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()


def _args(context: RequestContext) -> Any:
    """A data part is the arguments as is; else the text, as ``{"prompt": text, "context_id": ...}``."""
    assert context.message is not None
    data = get_data_parts(context.message.parts)
    if data:
        return data[0]
    return {"prompt": context.get_user_input(), "context_id": context.context_id}


def _answer(env: Envelope) -> tuple[Any, str | None]:
    meta = env.payload.metadata
    if meta.get("ok") is False or meta.get("error"):
        raise MeshError(str(meta.get("error") or meta.get("state") or "the task failed"))
    return env.content, str(meta.get("node") or env.source.instance_id)


def _part(content: Any) -> Part:
    if isinstance(content, str):
        return new_text_part(content)
    try:
        return new_data_part(content)
    except (TypeError, ValueError):
        return new_text_part(json.dumps(content))

