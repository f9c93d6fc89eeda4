"""Request/reply over the mesh: publish with a correlation id and await the RESULT, and the one
builder of RESULT envelopes (command replies, task results, ``Mesh.reply``).

Results go to ``nxs.result.<correlation_id>`` (the request's message id when it has none). A RESULT
whose ``metadata.state`` says the call ended without a result (a task failed, cancelled, expired or
orphaned) raises ``CallEnded``, a ``RemoteError``. A wait may also watch its target's death alerts
(``watch``, a ``DeathAlarm``): a COMMAND whose node dies before answering ends ``orphaned`` then, not at
its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nxs_mesh.transport.link import Link
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, Source, decode, new_envelope
from nxs_mesh.wire.errors import CallEnded, EnvelopeError, MeshTimeout, RemoteError
from nxs_mesh.wire.sealing import SEALED_HEADER

__all__ = ["Accept", "DeathAlarm", "Screen", "await_result", "build_result", "correlation_of"]

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


class DeathAlarm:
    """The death alerts of every node, for the calls waiting on one (one per ``Mesh``): a single plain
    subscription on ``nxs.alert.*``, made on first use, so a call pays a set insert, not a SUB/UNSUB.
    A death alert about a node cancels the tasks waiting on it; ``await_result`` turns that into
    ``CallEnded`` ``orphaned``. (A trusted node could forge such an alert: it can only make a caller stop
    waiting early.)"""

    def __init__(self) -> None:
        self._sub: Any = None
        self._waiting: dict[str, set[asyncio.Task[Any]]] = {}
        self._fired: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"<DeathAlarm {'listening' if self._sub is not None else 'idle'}, {len(self._waiting)} nodes watched>"

    async def watch(self, link: Link, node: str) -> asyncio.Task[Any] | None:
        """Register the current task as waiting on ``node`` (the last step before its wait: no await after)."""
        if self._sub is None:
            self._sub = await link.subscribe(f"{subjects.ROOT}.alert.*", self._on_alert)
        task = asyncio.current_task()
        if task is not None:
            self._waiting.setdefault(node, set()).add(task)
        return task

    def unwatch(self, node: str, task: asyncio.Task[Any]) -> bool:
        """Unregister (synchronously, before any await); True when the node's death cancelled the task."""
        tasks = self._waiting.get(node)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._waiting[node]
        if task in self._fired:
            self._fired.discard(task)
            return True
        return False

    async def _on_alert(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        try:
            content = decode(data, strict_content=False).content
        except EnvelopeError:
            return
        if not isinstance(content, dict) or content.get("event") != "dead":
            return
        for task in list(self._waiting.get(str(content.get("node")), ())):
            if task not in self._fired:
                self._fired.add(task)
                task.cancel()


async def await_result(link: Link, correlation_id: str, send: Any, *, timeout: float, waiting_for: str,
                       accept: Screen | None = None, watch: tuple[DeathAlarm, str] | None = None) -> Any:
    """Subscribe to the RESULT subject, run ``send()`` (the publish), and wait for the answer.

    Subscribes first, so a fast answer is not missed. Returns ``(send's result, RESULT envelope)``;
    raises ``MeshTimeout`` after ``timeout`` and ``RemoteError`` when the RESULT carries an error
    (``CallEnded`` when it also carries the state it ended in). With ``accept``, a RESULT it refuses
    (forged, unsigned in secure mode) is logged and skipped: the wait goes on for the real one. With
    ``watch`` (an alarm and a node id), that node's death alert ends the wait: ``CallEnded`` ``orphaned``."""
    subject = subjects.result(correlation_id)
    waiter = await link.reply_waiter(subject, max_msgs=0 if accept is not None else 1)
    me = await watch[0].watch(link, watch[1]) if watch is not None else None
    deadline = time.monotonic() + timeout
    try:
        ack = await send()
        while True:
            try:
                data, headers = await waiter.next_message(max(0.001, deadline - time.monotonic()))
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
    except asyncio.CancelledError:
        if watch is None or me is None or not watch[0].unwatch(watch[1], me):
            raise  # cancelled by someone else
        me.uncancel()
        node, watch = watch[1], None  # unwatched already
        raise CallEnded(f"{node} died before answering: the call is orphaned", node, state="orphaned") from None
    finally:
        if watch is not None and me is not None:
            watch[0].unwatch(watch[1], me)  # before any await: a death from here on cannot cancel us
        await waiter.close()
    error = env.payload.metadata.get("error")
    if error:
        state = env.payload.metadata.get("state")
        if isinstance(state, str):
            task_id = env.payload.metadata.get("task_id")
            raise CallEnded(str(error), env.source.instance_id, state=state,
                            task_id=task_id if isinstance(task_id, str) else None)
        raise RemoteError(str(error), env.source.instance_id)
    return ack, env
