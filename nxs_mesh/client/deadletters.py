"""What a consumer's dead letter carries: the reason and the original's whereabouts in headers, and
a body cut to fit the server's ``max_payload``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from nxs_mesh.transport.pull import Delivered, Meta
from nxs_mesh.wire.contract import DLQ_MSG_ID, MSG_ID_HEADER
from nxs_mesh.wire.envelope import format_time

__all__ = ["dead_letter_headers", "fit_payload"]

# Room left for the DLQ headers and the protocol line when a dead letter must be truncated to fit.
_DLQ_HEADROOM: Final = 4096


def dead_letter_headers(msg: Delivered, meta: Meta, reason: str, consumer: str) -> dict[str, str]:
    headers = {
        MSG_ID_HEADER: DLQ_MSG_ID.format(stream=meta.stream, seq=meta.stream_seq),
        "Nxs-Dlq-Reason": reason.replace("\r", " ").replace("\n", " ")[:1000],
        "Nxs-Dlq-Subject": msg.subject,
        "Nxs-Dlq-Stream": meta.stream,
        "Nxs-Dlq-Seq": str(meta.stream_seq),
        "Nxs-Dlq-Consumer": consumer,
        "Nxs-Dlq-Deliveries": str(meta.num_delivered),
        "Nxs-Dlq-Time": format_time(datetime.now(UTC)),
    }
    for key, value in (msg.headers or {}).items():
        if key.startswith("Nxs-") and key not in headers and len(value) < 1024:
            headers[key] = value
    return headers


def fit_payload(data: bytes, headers: dict[str, str], max_payload: int) -> bytes:
    """``data`` cut so that it and ``headers`` fit in one message the server accepts (nats-py closes the
    connection when the server refuses one: a dead letter must never do that)."""
    room = max_payload - sum(len(k) + len(v) + 4 for k, v in headers.items()) - _DLQ_HEADROOM
    return data if len(data) <= room else data[:max(0, room)]
