"""The gateway's A2A binding: every mesh agent is an A2A agent, served by the A2A SDK's own server.

    GET  /a2a/<agent>/.well-known/agent-card.json    its AgentCard (``gateway.a2a_cards``)
    POST /a2a/<agent>                                JSON-RPC: SendMessage, SendStreamingMessage (SSE),
                                                     GetTask, ListTasks, CancelTask, SubscribeToTask

``A2AMount`` is mounted by ``create_app`` at ``/a2a``. It finds the agent in the registry (404 when
no agent has that id: nothing would answer), checks the caller's bearer token like every route, and
hands the request to that agent's SDK routes (``create_agent_card_routes`` / ``create_jsonrpc_routes``
with a ``DefaultRequestHandler``, an ``InMemoryTaskStore`` and ``MeshAgentExecutor``), built once per
agent. The task store lives in the gateway (a restart forgets A2A tasks; the mesh keeps their RESULTs).
"""

from __future__ import annotations

import logging

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import DefaultServerCallContextBuilder, create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from starlette.requests import HTTPConnection, Request
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from nxs_mesh.client.agents import AgentRecord
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.gateway.a2a_cards import A2A_PATH, agent_card
from nxs_mesh.gateway.a2a_executor import MESH_STATE, MeshAgentExecutor, TaskCancel
from nxs_mesh.gateway.errors import ApiError
from nxs_mesh.gateway.runtime import gateway_of
from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import MeshError

__all__ = ["A2A_PATH", "A2AMount"]

log = logging.getLogger("nxs_mesh.gateway.a2a")


class _MeshContext(DefaultServerCallContextBuilder):
    """The SDK's call context plus the caller's ``Mesh`` (its identity's, from the bearer token)."""

    def build(self, request: Request) -> ServerCallContext:
        ctx = super().build(request)
        ctx.state[MESH_STATE] = gateway_of(request).mesh_for(request)[0]
        return ctx


class A2AMount:
    """The ASGI app under ``/a2a``: ``/<agent>/...`` goes to that agent's SDK routes."""

    def __init__(self, *, cancel: TaskCancel | None = None) -> None:
        self._cancel = cancel
        self._agents: dict[str, Router] = {}
        self._handlers: list[DefaultRequestHandler] = []

    def __repr__(self) -> str:
        return f"<A2AMount [{len(self._agents)} agents served]>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ApiError(404, "the A2A binding speaks HTTP only")
        conn = HTTPConnection(scope)
        gw = gateway_of(conn)
        mesh, _ = gw.mesh_for(conn)
        head, _, rest = _route_path(scope).lstrip("/").partition("/")
        if not head:
            raise ApiError(404, f"say which agent: {A2A_PATH}/<agent>{AGENT_CARD_WELL_KNOWN_PATH}", field="agent")
        agent = check_id(head, "agent")
        record = await _record(mesh, agent)
        base_url = str(conn.base_url).rstrip("/")
        inner = {**scope, "root_path": scope.get("root_path", "") + "/" + head}
        if not rest and not scope["path"].endswith("/"):  # /a2a/<agent> is the SDK's rpc_url "/"
            inner["path"] = scope["path"] + "/"
        if "/" + rest == AGENT_CARD_WELL_KNOWN_PATH:
            # A fresh card per read: the owner or its commands may have changed since the last one.
            card = await agent_card(mesh, record, base_url)
            await Router(routes=create_agent_card_routes(card))(inner, receive, send)
            return
        router = self._agents.get(agent)
        if router is None:
            router = self._agents[agent] = await self._build(mesh, record, base_url, gw.options.max_timeout)
        await router(inner, receive, send)

    async def aclose(self) -> None:
        """Drain every agent's SDK handler (the app's lifespan, before the meshes close): executors
        still waiting for an answer are cancelled, so a stopped gateway leaves no task behind."""
        handlers, self._handlers = self._handlers, []
        self._agents.clear()
        for handler in handlers:
            await handler.aclose()

    async def _build(self, mesh: Mesh, record: AgentRecord, base_url: str, timeout: float) -> Router:
        card = await agent_card(mesh, record, base_url)
        handler = DefaultRequestHandler(agent_executor=MeshAgentExecutor(record.agent, timeout=timeout,
                                                                         cancel=self._cancel),
                                        task_store=InMemoryTaskStore(), agent_card=card)
        self._handlers.append(handler)
        routes = create_jsonrpc_routes(handler, rpc_url="/", context_builder=_MeshContext())
        log.info("a2a: serving agent %s", record.agent)
        return Router(routes=list(routes))


def _route_path(scope: Scope) -> str:
    """The path below the mount (``/a2a``): Starlette keeps the whole path and puts the mount in root_path."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root):] if root and path.startswith(root) else path


async def _record(mesh: Mesh, agent: str) -> AgentRecord:
    try:
        record = await mesh.agents.get(agent)
    except MeshError as exc:
        raise ApiError(503, f"the agent registry cannot be read: {exc}") from None
    if record is None:
        raise ApiError(404, f"no agent {agent!r} in the mesh (see `nxs agents`): nothing would answer",
                       field="agent")
    return record
