"""A node's COMMAND consumer handler: run the named handler, answer with a RESULT.

Once a handler has returned, its message is settled whatever happens next: a RESULT that cannot be
built or stored is logged and counted, never a reason to run the handler again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nxs_mesh.client.calls import build_result
from nxs_mesh.client.delivery import Delivery
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.client.security import is_sealed
from nxs_mesh.node.authorize import Authorizer
from nxs_mesh.node.handlers import Context, Registry, call_handler
from nxs_mesh.wire.contract import result_subject
from nxs_mesh.wire.envelope import Envelope
from nxs_mesh.wire.errors import EnvelopeError, HandlerSignal, MeshError, Reject
from nxs_mesh.wire.ids import result_id

__all__ = ["CommandRunner"]

log = logging.getLogger("nxs_mesh.node.commands")

_NOT_A_COMMAND = 'not a command: content must be {"command": name, "args": ...}'


class CommandRunner:
    """Handles the COMMANDs of one node (``handle`` is the consumer's handler)."""

    def __init__(self, mesh: Mesh, registry: Registry, *, max_deliver: int,
                 status: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.mesh, self.registry, self.max_deliver, self._status = mesh, registry, max_deliver, status
        self.reply_failures = 0
        self.authorizer = Authorizer(mesh)
        self._sealed: dict[str, bool] = {}  # message id -> answer sealed

    @property
    def node_id(self) -> str:
        return self.mesh.config.instance_id

    async def handle(self, env: Envelope, delivery: Delivery) -> None:
        # A sealed command is answered sealed (to the caller's key), when the trust file has one.
        self._sealed[env.id] = is_sealed(delivery.headers) and self.mesh.security.can_seal_to(env.source.instance_id)
        try:
            await self._run(env, delivery)
        finally:
            self._sealed.pop(env.id, None)

    async def _run(self, env: Envelope, delivery: Delivery) -> None:
        content = env.content
        if not isinstance(content, dict) or not isinstance(content.get("command"), str):
            await self._reply(env, None, error=_NOT_A_COMMAND)
            raise Reject(_NOT_A_COMMAND)
        name = content["command"]
        refusal = self.authorizer.refusal("command", name, env, delivery)  # before anything about the node is said
        if refusal is not None:
            await self._reply(env, None, error=refusal)
            raise Reject(refusal)
        fn = self.registry.commands.get(name)
        if fn is None:
            reason = f"unknown command {name!r}; this node knows {', '.join(sorted(self.registry.commands))}"
            await self._reply(env, None, error=reason)
            raise Reject(reason)
        ctx = Context(self.node_id, env, delivery, mesh=self.mesh, status=self._status)
        try:
            result = await call_handler(fn, content.get("args"), ctx)
        except Reject as exc:
            await self._reply(env, None, error=exc.reason)
            raise
        except HandlerSignal:
            raise
        except Exception as exc:  # a failing handler: answer on its last attempt, then let delivery retry it
            if delivery.deliveries >= self.max_deliver:
                await self._reply(env, None, error=f"{type(exc).__name__}: {exc}")
            raise
        await self._reply(env, result)

    async def _reply(self, env: Envelope, content: Any, *, error: str | None = None) -> None:
        if not isinstance(env.reply_to, str):
            return
        command = env.content.get("command") if isinstance(env.content, dict) else None
        seal = self._sealed.get(env.id, False)
        try:
            try:
                await self.mesh.send(build_result(env, content, source=self.mesh.source, error=error,
                                                  message_id=result_id(env.id), command=command),
                                     subject=result_subject(env), seal=seal)
            except EnvelopeError as exc:
                # The handler's result cannot travel (not JSON, bad text): tell the caller so.
                await self.mesh.send(build_result(env, None, source=self.mesh.source, message_id=result_id(env.id),
                                                  error=f"the handler's result cannot be sent: {exc}", command=command),
                                     subject=result_subject(env))
        except MeshError as exc:
            # The command ran (or was refused) already: running it again would not mend the answer.
            self.reply_failures += 1
            log.error("command %s from %s: cannot store its RESULT (%s); the caller times out",
                      env.id, env.source.instance_id, exc)
