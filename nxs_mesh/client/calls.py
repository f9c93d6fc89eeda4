"""Request/reply over the mesh: publish with a correlation id and await the RESULT, and the one
builder of RESULT envelopes (command replies, task results, ``Mesh.reply``).

Results go to ``nxs.result.<correlation_id>`` (the request's message id when it has none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nxs_mesh.transport.link import Link
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, Source, decode, new_envelope
from nxs_mesh.wire.errors import EnvelopeError, MeshTimeout, RemoteError
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
                       accept: Screen | None = None) -> Any:
    """Subscribe to the RESULT subject, run ``send()`` (the publish), and wait for the answer.

    Subscribes first, so a fast answer is not missed. Returns ``(send's result, RESULT envelope)``;
    raises ``MeshTimeout`` after ``timeout`` and ``RemoteError`` when the RESULT carries an error.
    With ``accept``, a RESULT it refuses (forged, unsigned in secure mode) is logged and skipped: the
    wait goes on for the real one."""
    subject = subjects.result(correlation_id)
    waiter = await link.reply_waiter(subject, max_msgs=0 if accept is not None else 1)
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
    finally:
        await waiter.close()
    error = env.payload.metadata.get("error")
    if error:
        raise RemoteError(str(error), env.source.instance_id)
    return ack, env
