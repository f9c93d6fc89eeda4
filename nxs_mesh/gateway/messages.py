"""``POST /v1/messages`` (publish) and ``GET /v1/messages`` (bounded replay).

A body with ``message_type`` is a full contract envelope (DESIGN.md section 3), validated as any
receiver validates it; anything else is the short form ``{"type", "to", "agent", "content", ...}``,
built into an envelope from the caller's identity. ``Idempotency-Key`` becomes the envelope's
``message_id`` (a UUID key as it is, any other key as a UUIDv5 of the identity and the key), so the
mesh's own dedup (``Nats-Msg-Id``, the streams' duplicate window) answers a repeat with the first
one's stream and sequence and ``"duplicate": true``.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from nxs_mesh.client.admin import STREAMS
from nxs_mesh.client.mesh import Mesh, Record
from nxs_mesh.gateway.errors import ApiError
from nxs_mesh.gateway.inputs import ReplayStart, int_param, json_bytes, replay_start, validation_field
from nxs_mesh.gateway.outputs import ack_json, json_response, record_json
from nxs_mesh.gateway.runtime import gateway_of
from nxs_mesh.wire.contract import DEFAULT_PRIORITY, DEFAULT_TTL
from nxs_mesh.wire.envelope import BROADCAST, check_id, decode

__all__ = ["KINDS", "get_messages", "idempotent_id", "post_message", "replay"]

#: What ``kind`` may name: one per mesh stream (chat, command, task, result, status, heartbeat, ...).
KINDS: tuple[str, ...] = tuple(s.name.removeprefix("NXS_").lower() for s in STREAMS)
_KEY_NAMESPACE = uuid.UUID("6d0c7a4e-2f0b-4c35-9a51-7c1e5b1f0a11")  # fixed: the same key maps the same way forever
MAX_LIMIT = 1000


class ShortMessage(msgspec.Struct, forbid_unknown_fields=True):
    """The short form of ``POST /v1/messages``."""

    type: str
    to: str = BROADCAST
    agent: str = BROADCAST
    content: Any = ""
    metadata: dict[str, Any] | None = None
    priority: int = DEFAULT_PRIORITY
    ttl: int = DEFAULT_TTL
    to_agent: str | None = None
    correlation_id: str | None = None


def idempotent_id(key: str | None, identity: str) -> str | None:
    """The ``message_id`` an ``Idempotency-Key`` stands for (None without a key)."""
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError(400, "an Idempotency-Key is 1..255 printable characters", field="Idempotency-Key")
    with contextlib.suppress(ValueError):
        return str(uuid.UUID(key))
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{identity}/{key}"))


async def _body(request: Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    data, parsed = await json_bytes(request, limit)
    if not isinstance(parsed, dict):
        raise ApiError(400, "the body must be a JSON object (an envelope or the short form)", field="body")
    return data, parsed


def _short_form(parsed: dict[str, Any]) -> ShortMessage:
    try:
        return msgspec.convert(parsed, ShortMessage)
    except msgspec.ValidationError as exc:
        message, field = validation_field(exc)
        raise ApiError(400, message, field=field) from None


async def post_message(request: Request) -> Response:
    gw = gateway_of(request)
    mesh, who = gw.mesh_for(request)
    data, parsed = await _body(request, gw.options.max_body)
    mid = idempotent_id(request.headers.get("idempotency-key"), mesh.config.instance_id)
    if "message_type" in parsed:
        env = decode(data)  # the contract's own validation: EnvelopeError names the field (400)
        if gw.tokens is not None and env.source.instance_id != mesh.config.instance_id:
            raise ApiError(403, f"identity {who!r} may send only as {mesh.config.instance_id!r}, not as "
                                f"{env.source.instance_id!r}", field="source.instance_id")
        if mid is not None:
            env = msgspec.structs.replace(env, message_id=uuid.UUID(mid))
        ack = await mesh.send(env)
    else:
        short = _short_form(parsed)
        ack = await mesh.publish(
            short.type, short.content, to=short.to, agent=short.agent, priority=short.priority, ttl=short.ttl,
            metadata=short.metadata, correlation_id=short.correlation_id, message_id=mid, to_agent=short.to_agent,
        )
    return json_response(ack_json(ack), status=200 if ack.duplicate else 201)


def kind_param(request: Request) -> str:
    kind = (request.query_params.get("kind") or "chat").lower()
    if kind not in KINDS:
        raise ApiError(400, f"unknown kind {kind!r}; known: {', '.join(KINDS)}", field="kind")
    return kind


def replay(mesh: Mesh, request: Request, start: ReplayStart, *, follow: bool) -> Any:
    """``mesh.tail`` for the request's ``kind``, ``instance`` and ``agent`` from ``start``."""
    q = request.query_params
    instance, agent = q.get("instance") or None, q.get("agent") or None
    for name, value in (("instance", instance), ("agent", agent)):
        if value is not None:
            check_id(value, name, allow_all=True)  # a subject token: never passed on unchecked
    return mesh.tail(kind_param(request), instance=instance, agent=agent, seq=start.seq, since=start.since,
                     last=start.last, follow=follow)


async def get_messages(request: Request) -> Response:
    """Stored messages in stream order, at most ``limit``; ``next`` is the ``since`` that goes on after them."""
    gw = gateway_of(request)
    mesh, _ = gw.mesh_for(request)
    limit = int_param(request, "limit", 100, low=1, high=MAX_LIMIT)
    assert limit is not None
    start = replay_start(request)
    out: list[Record] = []
    more = False
    records = replay(mesh, request, start, follow=False)
    try:
        async for rec in records:
            if len(out) == limit:
                more = True
                break
            out.append(rec)
    finally:
        await records.aclose()
    last_seq = out[-1].seq if out else None
    return json_response({"messages": [record_json(r) for r in out], "count": len(out), "more": more,
                          "next": last_seq + 1 if last_seq is not None else None})
