"""Request/reply on the mesh: a COMMAND and its RESULT, correlated (mixed into ``Mesh``).

    reply = await mesh.request("nxs-node-002", "ping", timeout=5)
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nxs_mesh.client.calls import Accept, DeathAlarm, await_result, build_result
from nxs_mesh.client.publishing import PublishResult
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import REQUEST_PRIORITY, result_subject
from nxs_mesh.wire.envelope import BROADCAST, Envelope

if TYPE_CHECKING:
    from nxs_mesh.client.security import MessageSecurity
    from nxs_mesh.transport.link import Link
    from nxs_mesh.wire.envelope import Source

__all__ = ["Requests"]


class Requests:
    """``request``, ``call`` and ``reply``; needs the ``Mesh``'s publish, send, link, security, source."""

    _death_alarm: DeathAlarm | None = None  # made on the first call that watches a node

    if TYPE_CHECKING:
        security: MessageSecurity
        source: Source
        publish: Callable[..., Awaitable[PublishResult]]
        send: Callable[..., Awaitable[PublishResult]]

        @property
        def link(self) -> Link: ...

    # -- request / reply ---------------------------------------------------------------------------
    async def request(
        self,
        to: str,
        command: str,
        args: Any = None,
        *,
        agent: str = "*",
        timeout: float = 5.0,
        priority: int = REQUEST_PRIORITY,
        seal: bool = False,
    ) -> Envelope:
        """Send a COMMAND and wait for its RESULT; raises ``MeshTimeout`` or ``RemoteError``.
        ``seal``: the command and its arguments are sealed to ``to``'s key.

        How it ends, always once: the RESULT (``RemoteError`` when it says the command failed); the
        target's death alert while waiting (``CallEnded`` with state ``orphaned``: the node died before
        answering); or the timeout (``MeshTimeout``), which is also the command's ttl, so a command
        nobody ran by then expires unrun with it."""
        corr = str(uuid.uuid4())
        _, env = await self.call(
            "COMMAND", {"command": command, "args": args}, correlation_id=corr, timeout=timeout,
            waiting_for=f"reply from {to} to {command!r}", to=to, agent=agent, priority=priority,
            ttl=max(1, int(timeout + 0.999)), seal=seal, watch=None if to in (BROADCAST, subjects.ALL) else to,
        )
        return env

    async def call(
        self, message_type: str, content: Any, *, correlation_id: str, timeout: float, waiting_for: str,
        accept: Accept | None = None, watch: str | None = None, **publish: Any,
    ) -> tuple[PublishResult, Envelope]:
        """Publish with ``reply_to`` = ``nxs.result.<correlation_id>`` and wait for that RESULT.

        Raises ``MeshTimeout`` after ``timeout`` and ``RemoteError`` when the RESULT carries an error. In
        secure mode a RESULT that fails verification is ignored (so is one ``accept`` refuses). ``watch``: a
        node whose death alert ends the wait (``CallEnded`` ``orphaned``)."""
        reply = subjects.result(correlation_id)

        async def send() -> PublishResult:
            return await self.publish(message_type, content, correlation_id=correlation_id, reply_to=reply, **publish)

        check = self.security.result_check(accept)
        if watch is not None and self._death_alarm is None:
            self._death_alarm = DeathAlarm()
        alarm = (self._death_alarm, watch) if watch is not None and self._death_alarm is not None else None
        ack, env = await await_result(self.link, correlation_id, send, timeout=timeout, waiting_for=waiting_for,
                                      accept=check, watch=alarm)
        return ack, env

    async def reply(self, request: Envelope, content: Any = None, *, error: str | None = None,
                    message_id: str | None = None, **metadata: Any) -> PublishResult:
        """Answer a request with a RESULT envelope (correlated by the request's correlation id)."""
        return await self.send(build_result(request, content, source=self.source, error=error,
                                            message_id=message_id, **metadata), subject=result_subject(request))
