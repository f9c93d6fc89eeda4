"""Request/reply over the mesh: publish with a correlation id and await the RESULT, and the one
builder of RESULT envelopes (command replies, task results, ``Mesh.reply``).

Results go to ``nxs.result.<correlation_id>`` (the request's message id when it has none). A RESULT
whose ``metadata.state`` says the call ended without a result (a task failed, cancelled, expired or
orphaned) raises ``CallEnded``, a ``RemoteError``. A wait may also watch its target's death alerts
(``watch``): a COMMAND whose node dies before answering ends ``orphaned`` then, not at the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nxs_mesh.transport.link import Link, ReplyWaiter
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, Source, decode, new_envelope
from nxs_mesh.wire.errors import CallEnded, EnvelopeError, MeshTimeout, RemoteError
from nxs_mesh.wire.sealing import SEALED_HEADER

__all__ = ["Accept", "Screen", "await_result", "build_result", "correlation_of"]

log = logging.getLogger("nxs_mesh.client.calls")


def correlation_of(request: Envelope) -> str:
    """The token a request's RESULT is correlated by."""
    return request.correlation_id if isinstance(request.correlation_id, str) else request.id


def build_result(
    request: Envelope, content: Any, *, source: Source, error: str | None = None, message_id: str | None = None,
    ttl: int | None = None, **metadata: Any,
) -> Envelope:
    """The RESULT answering ``request``: ``metadata.ok`` and ``metadata.error`` say how it went."""
    meta: dict[str, Any] = {"ok": error is None, **metadata}
    if error is not None:
        meta["error"] = error
    return new_envelope(
        "RESULT", content, source=source, to=request.source.instance_id, agent=request.source.agent_id,
        correlation_id=correlation_of(request), metadata=meta, message_id=message_id,
        ttl=request.ttl if ttl is None else ttl,
    )


#: A caller's check of a RESULT before it believes it: the verdict ``(ok, why)`` for an envelope, its
#: subject, body and headers (``Mesh.call`` checks signatures in secure mode; tasks, the claim record).
Accept = Callable[[Envelope, str, bytes, "dict[str, str] | None"], Awaitable[tuple[bool, str]]]
#: What ``await_result`` runs on each RESULT: the envelope to return (verified, opened when sealed), or
#: None and why it is refused.
Screen = Callable[[Envelope, str, bytes, "dict[str, str] | None"], Awaitable[tuple[Envelope | None, str]]]


async def await_result(link: Link, correlation_id: str, send: Any, *, timeout: float, waiting_for: str,
                       accept: Screen | None = None, watch: str | None = None) -> Any:
    """Subscribe to the RESULT subject, run ``send()`` (the publish), and wait for the answer.

    Subscribes first, so a fast answer is not missed. Returns ``(send's result, RESULT envelope)``;
    raises ``MeshTimeout`` after ``timeout`` and ``RemoteError`` when the RESULT carries an error
    (``CallEnded`` when it also carries the state it ended in). With ``accept``, a RESULT it refuses
    (forged, unsigned in secure mode) is logged and skipped: the wait goes on for the real one. With
    ``watch`` (a node id), that node's death alert ends the wait: ``CallEnded`` ``orphaned``."""
    subject = subjects.result(correlation_id)
    waiter = await link.reply_waiter(subject, max_msgs=0 if accept is not None else 1)
    death = _DeathWatch(watch, await link.reply_waiter(subjects.alert(watch), max_msgs=0)) if watch else None
    deadline = time.monotonic() + timeout
    try:
        ack = await send()
        while True:
            try:
                data, headers = await _next(waiter, death, max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                raise MeshTimeout(f"no {waiting_for} within {timeout}s") from None
            if accept is None:
                env = decode(data)
                break
            try:
                env = decode(data, strict_content=not (headers and SEALED_HEADER in headers))
            except EnvelopeError as exc:
                log.warning("ignoring garbage on %s: %s", subject, exc)
                continue
            screened, why = await accept(env, subject, data, headers)
            if screened is not None:
                env = screened
                break
            log.warning("ignoring a RESULT on %s from %s: %s", subject, env.source.instance_id, why)
    finally:
        await waiter.close()
        if death is not None:
            await death.close()
    error = env.payload.metadata.get("error")
    if error:
        state = env.payload.metadata.get("state")
        if isinstance(state, str):
            task_id = env.payload.metadata.get("task_id")
            raise CallEnded(str(error), env.source.instance_id, state=state,
                            task_id=task_id if isinstance(task_id, str) else None)
        raise RemoteError(str(error), env.source.instance_id)
    return ack, env


class _DeathWatch:
    """The death alerts of one node while a call waits for it (``nxs.alert.<node>``, event ``dead``)."""

    def __init__(self, node: str, alerts: ReplyWaiter) -> None:
        self.node, self.alerts = node, alerts
        self._next: asyncio.Future[tuple[bytes, dict[str, str] | None]] | None = None

    def next_alert(self) -> asyncio.Future[tuple[bytes, dict[str, str] | None]]:
        """The pending read of the next alert (one at a time, kept across waits)."""
        if self._next is None or self._next.done():
            self._next = asyncio.ensure_future(self.alerts.next_message(86400.0))
        return self._next

    def is_death(self, data: bytes) -> bool:
        try:
            content = decode(data, strict_content=False).content
        except EnvelopeError:
            return False
        return isinstance(content, dict) and content.get("event") == "dead" and content.get("node") == self.node

    async def close(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._next
        await self.alerts.close()


async def _next(waiter: ReplyWaiter, death: _DeathWatch | None, timeout: float) -> tuple[bytes, dict[str, str] | None]:
    """The next RESULT message; with a death watch, ``CallEnded`` ``orphaned`` when the target dies first."""
    if death is None:
        return await waiter.next_message(timeout)
    reply = asyncio.ensure_future(waiter.next_message(timeout))  # owned: awaited or cancelled below
    try:
        while True:
            alert = death.next_alert()
            done, _ = await asyncio.wait({reply, alert}, return_when=asyncio.FIRST_COMPLETED)
            if reply in done:
                return reply.result()
            if alert.exception() is None and death.is_death(alert.result()[0]):
                raise CallEnded(f"{death.node} died before answering: the call is orphaned", death.node,
                                state="orphaned")
            if alert.exception() is not None:  # the alert subscription failed: wait for the reply alone
                return await reply
    finally:
        if not reply.done():
            reply.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reply
