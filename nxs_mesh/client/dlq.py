"""Dead letters: list them with their reason, replay them to where they came from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.wire.contract import DLQ_STREAM, MSG_ID_HEADER, REPLAY_MSG_ID
from nxs_mesh.wire.errors import MeshError

__all__ = ["DeadLetter", "Replayed", "list_dead_letters", "replay_dead_letter"]



@dataclass(frozen=True)
class DeadLetter:
    seq: int
    stored_at: datetime
    reason: str
    subject: str  # where it was originally published
    stream: str
    original_seq: int | None
    deliveries: int | None
    data: bytes

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.seq, "time": self.stored_at.isoformat(), "reason": self.reason,
            "subject": self.subject, "stream": self.stream, "original_seq": self.original_seq,
            "deliveries": self.deliveries, "size": len(self.data),
            "preview": self.data[:120].decode("utf-8", errors="replace"),
        }


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def list_dead_letters(mesh: Mesh, *, last: int | None = None) -> AsyncIterator[DeadLetter]:
    async for rec in mesh.tail("dlq", last=last):
        h = rec.headers
        yield DeadLetter(
            seq=rec.seq, stored_at=rec.stored_at, reason=h.get("Nxs-Dlq-Reason", "(no reason recorded)"),
            subject=h.get("Nxs-Dlq-Subject", ""), stream=h.get("Nxs-Dlq-Stream", ""),
            original_seq=_int(h.get("Nxs-Dlq-Seq")), deliveries=_int(h.get("Nxs-Dlq-Deliveries")), data=rec.data,
        )


@dataclass(frozen=True)
class Replayed:
    id: int  # the dead letter's sequence in NXS_DLQ
    subject: str  # where it went back to
    stream: str  # the stream it came from
    seq: int  # its new sequence there


async def replay_dead_letter(mesh: Mesh, seq: int) -> Replayed:
    """Publish dead letter ``seq`` back to its original subject, then remove it from the DLQ.

    Returns where it went. The replay carries a deterministic ``Nats-Msg-Id`` so running it
    twice within the duplicate window stores it once.
    """
    rec = await mesh.admin.message(DLQ_STREAM, seq)
    if rec is None:
        raise MeshError(f"no dead letter with id {seq} (see `nxs dlq list`)")
    headers = rec.headers
    subject = headers.get("Nxs-Dlq-Subject")
    if not subject:
        raise MeshError(f"dead letter {seq} has no original subject; cannot replay")
    if "Nxs-Dlq-Truncated" in headers:
        raise MeshError(f"dead letter {seq} holds a truncated copy ({headers['Nxs-Dlq-Truncated']}); cannot replay")
    out = {k: v for k, v in headers.items() if k.startswith("Nxs-") and not k.startswith("Nxs-Dlq-")}
    out[MSG_ID_HEADER] = REPLAY_MSG_ID.format(stream=DLQ_STREAM, seq=seq)
    out["Nxs-Replayed-From"] = str(seq)
    ack = await mesh.pub.publish(subject, rec.data, out, mesh.publish_timeout)
    await mesh.admin.delete_message(DLQ_STREAM, seq)
    return Replayed(seq, subject, headers.get("Nxs-Dlq-Stream", ack.stream), int(ack.seq or 0))
