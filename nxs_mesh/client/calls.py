"""Request/reply over the mesh: publish with a correlation id and await the RESULT, and the one
builder of RESULT envelopes (command replies, task results, ``Mesh.reply``).

Results go to ``nxs.result.<correlation_id>`` (the request's message id when it has none).
"""

from __future__ import annotations

from typing import Any

from nxs_mesh.transport.link import Link
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, Source, decode, new_envelope
from nxs_mesh.wire.errors import MeshTimeout, RemoteError

__all__ = ["await_result", "build_result", "correlation_of"]


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


async def await_result(link: Link, correlation_id: str, send: Any, *, timeout: float, waiting_for: str) -> Any:
    """Subscribe to the RESULT subject, run ``send()`` (the publish), and wait for the answer.

    Subscribes first, so a fast answer is not missed. Returns ``(send's result, RESULT envelope)``;
    raises ``MeshTimeout`` after ``timeout`` and ``RemoteError`` when the RESULT carries an error."""
    waiter = await link.reply_waiter(subjects.result(correlation_id))
    try:
        ack = await send()
        try:
            data = await waiter.next(timeout)
        except TimeoutError:
            raise MeshTimeout(f"no {waiting_for} within {timeout}s") from None
        env = decode(data)
    finally:
        await waiter.close()
    error = env.payload.metadata.get("error")
    if error:
        raise RemoteError(str(error), env.source.instance_id)
    return ack, env
