"""What the gateway answers with: JSON encoded by msgspec (envelopes embedded as their exact contract
JSON, not re-encoded), and the one JSON form of a stored message used by replay and by SSE."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from nxs_mesh.client.mesh import PublishResult, Record
from nxs_mesh.wire.envelope import encode

__all__ = ["ack_json", "json_response", "record_bytes", "record_json"]

_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(body), status_code=status, headers=headers, media_type="application/json")


def record_json(rec: Record) -> dict[str, Any]:
    """A stored message: its stream sequence (the SSE event id), subject, stored time, and the envelope
    (null with ``error`` set when it does not decode; ``verified`` as the reading identity judged it)."""
    return {
        "seq": rec.seq, "subject": rec.subject, "stored_at": rec.stored_at.isoformat(),
        "envelope": msgspec.Raw(encode(rec.envelope)) if rec.envelope is not None else None,
        "error": rec.error, "verified": rec.verified,
    }


def record_bytes(rec: Record) -> bytes:
    return _encoder.encode(record_json(rec))


def ack_json(ack: PublishResult) -> dict[str, Any]:
    return {"message_id": ack.message_id, "stream": ack.stream, "seq": ack.seq, "duplicate": ack.duplicate}
