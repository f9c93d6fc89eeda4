"""Request/reply through the gateway: ``POST /v1/nodes/{node}/commands/{command}``, ``POST /v1/tasks``,
``GET /v1/tasks/{id}``, ``POST /v1/tasks/{id}/cancel``.

A command to a node that never published a status is 404 at once (nothing could answer); a listed
node that does not answer in ``timeout`` is 504; a remote error is 502 with the node's message.

``GET /v1/tasks/{id}`` answers ``Mesh.task_status`` (submitted, claimed, then one terminal state:
completed, failed, expired, cancelled, orphaned), unless ``create_app(task_status=...)`` replaces it with
another ``(mesh, task_id) -> dict`` function. A cancel of a task that already ended is 409.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.gateway.errors import ApiError
from nxs_mesh.gateway.inputs import int_param, json_body, timeout_param, validation_field
from nxs_mesh.gateway.messages import idempotent_id
from nxs_mesh.gateway.outputs import ack_json, json_response
from nxs_mesh.gateway.runtime import gateway_of
from nxs_mesh.node.checkup import list_nodes
from nxs_mesh.node.tasks import submit_task
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import DEFAULT_PRIORITY, REQUEST_PRIORITY, TASK_TTL
from nxs_mesh.wire.envelope import BROADCAST, Envelope, check_id

__all__ = ["cancel_task", "get_task", "post_command", "post_task"]


async def post_command(request: Request) -> Response:
    gw = gateway_of(request)
    mesh, _ = gw.mesh_for(request)
    node = check_id(request.path_params["node"], "node", allow_all=True)
    command = request.path_params["command"]
    if not 1 <= len(command) <= 128 or not command.isprintable():
        raise ApiError(400, "a command name is 1..128 printable characters", field="command")
    timeout = timeout_param(request, gw.options.command_timeout, gw.options.max_timeout)
    priority = int_param(request, "priority", REQUEST_PRIORITY, low=0, high=9)
    agent = check_id(request.query_params.get("agent") or BROADCAST, "agent", allow_all=True)
    args = await json_body(request, gw.options.max_body, required=False)
    if not await _known(mesh, node):
        raise ApiError(404, f"no node {node!r} in the mesh (it never published a status): nothing would answer",
                       field="node")
    assert priority is not None
    reply = await mesh.request(node, command, args, agent=agent, timeout=timeout, priority=priority)
    return json_response(_reply_json(reply))


async def _known(mesh: Mesh, node: str) -> bool:
    """Whether ``node`` (for ``*``: any node) ever published a status or heartbeat. A listed node that is
    down still gets the command: it waits in the node's queue until it returns or the command expires."""
    if node == BROADCAST:
        return bool(await list_nodes(mesh))
    for kind, subject in (("status", subjects.status(node)), ("heartbeat", subjects.heartbeat(node))):
        if await mesh.last(kind, subject) is not None:  # one direct get, not a read of every node's status
            return True
    return False


def _reply_json(env: Envelope) -> dict[str, Any]:
    return {"node": env.source.instance_id, "result": env.content, "correlation_id": env.correlation_id,
            "metadata": env.payload.metadata}


class TaskRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/tasks``."""

    capability: str
    payload: Any = None
    priority: int = DEFAULT_PRIORITY
    ttl: int = TASK_TTL
    wait: bool = False
    timeout: float = 60.0


async def post_task(request: Request) -> Response:
    gw = gateway_of(request)
    mesh, _ = gw.mesh_for(request)
    try:
        task = msgspec.convert(await json_body(request, gw.options.max_body), TaskRequest)
    except msgspec.ValidationError as exc:
        message, field = validation_field(exc)
        raise ApiError(400, message, field=field) from None
    check_id(task.capability, "capability")
    if task.wait and not 0 < task.timeout <= gw.options.max_timeout:
        raise ApiError(400, f"out of range: more than 0, at most {gw.options.max_timeout} seconds", field="timeout")
    task_id = idempotent_id(request.headers.get("idempotency-key"), mesh.config.instance_id) or str(uuid.uuid4())
    ack, result = await submit_task(mesh, task.capability, task.payload, priority=task.priority, ttl=task.ttl,
                                    wait=task.wait, timeout=task.timeout, task_id=task_id)
    body: dict[str, Any] = {"task_id": task_id, **ack_json(ack)}
    headers = {"Location": f"/v1/tasks/{task_id}"}
    if result is None:
        return json_response({**body, "state": "submitted"}, status=202, headers=headers)
    return json_response({**body, "state": "completed", "node": result.payload.metadata.get("node"),
                          "result": result.content}, headers=headers)


async def get_task(request: Request) -> Response:
    gw = gateway_of(request)
    mesh, _ = gw.mesh_for(request)
    task_id = _task_id(request)
    if gw.task_status is not None:
        return json_response(await gw.task_status(mesh, task_id))
    return json_response(await mesh.task_status(task_id))


async def cancel_task(request: Request) -> Response:
    gw = gateway_of(request)
    mesh, _ = gw.mesh_for(request)
    return json_response(await mesh.cancel(_task_id(request)))


def _task_id(request: Request) -> str:
    raw = request.path_params["task_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ApiError(400, f"{raw!r} is not a task id (a UUID)", field="task_id") from None
