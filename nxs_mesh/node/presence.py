"""What a doctor knows of the nodes: peers and their states, heartbeats parsed, the streams' last word.

    alive --(no heartbeat for suspect_after)--> suspect --(dead_after)--> dead
      ^                                                                    |
      +---------------------- heartbeat again: "recovered" ----------------+
    any state --(status "stopped": a clean exit)--> stopped (never "dead")

``stored_beats`` reads the last heartbeat and status per node from NXS_HEARTBEAT / NXS_STATUS (both keep
one message per subject): how a doctor that just became active catches up, and what any process that is
not a doctor can know (``nxs nodes`` reads the streams the same way, in ``checkup``).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nxs_mesh.client.admin import STREAMS
from nxs_mesh.client.mesh import Mesh, Record
from nxs_mesh.wire.envelope import Envelope

__all__ = ["CATCH_UP_WINDOW", "Beat", "Peer", "PeerState", "beat_of", "claims_of", "stored_beats"]

# How old a stored heartbeat a doctor that did not hear it may take up: its alert then follows any
# other doctor's within NXS_ALERT's duplicate window (so it is stored once).
CATCH_UP_WINDOW: float = next(s.duplicate_window for s in STREAMS if s.name == "NXS_ALERT") / 2

Beat = tuple[str, int, dict[str, Any]]  # (epoch, seq, content)


def beat_of(env: Envelope | None) -> Beat | None:
    """``(epoch, seq, content)`` of a heartbeat envelope, or None when it is not a usable one."""
    hb = env.content if env is not None and isinstance(env.content, dict) else {}
    epoch, seq = str(hb.get("epoch", "")), hb.get("seq", 0)
    if not epoch or not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return epoch, seq, hb


def claims_of(hb: dict[str, Any]) -> dict[str, str]:
    return hb["claims"] if isinstance(hb.get("claims"), dict) else {}


class PeerState(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    STOPPED = "stopped"


@dataclass
class Peer:
    """What this doctor knows of one node."""

    node: str
    epoch: str
    seq: int
    last_seen: float  # local monotonic time of the last heartbeat
    state: PeerState = PeerState.ALIVE
    reported: str = "running"  # what the node says of itself
    location: str = ""
    claims: dict[str, str] = field(default_factory=dict)
    died_seq: int = -1
    died_at: float = 0.0
    # This death's ALERT was stored (by us or, deduplicated, by another doctor); set when that is settled.
    alerted: bool = False
    alert_settled: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def first_heard(cls, env: Envelope, beat: Beat, at: float) -> Peer:
        epoch, seq, hb = beat
        return cls(env.source.instance_id, epoch, seq, at, reported=str(hb.get("state", "running")),
                   location=env.source.location, claims=claims_of(hb))

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.monotonic()) - self.last_seen


@dataclass(frozen=True)
class StoredBeat:
    record: Record
    envelope: Envelope
    beat: Beat

    @property
    def node(self) -> str:
        return self.envelope.source.instance_id


async def stored_beats(mesh: Mesh, *, window: float = CATCH_UP_WINDOW) -> list[StoredBeat]:
    """The last stored heartbeat of every node that may still be alive: recent (within ``window`` of the
    newest stored beat or our wall clock, whichever is later: a skewed clock can only leave nodes out),
    and not of an incarnation that said it stopped."""
    stopped: dict[str, str] = {}
    async for rec in mesh.tail("status"):
        env = rec.envelope
        if env is not None and isinstance(env.content, dict) and env.content.get("state") == "stopped":
            stopped[env.source.instance_id] = str(env.content.get("epoch", ""))
    found = [StoredBeat(rec, rec.envelope, b) async for rec in mesh.tail("heartbeat")
             if rec.envelope is not None and (b := beat_of(rec.envelope))]
    ref = max([datetime.now(UTC), *(s.record.stored_at for s in found)])
    return [s for s in found
            if s.beat[2].get("state") != "stopped" and stopped.get(s.node) != s.beat[0]
            and (ref - s.record.stored_at).total_seconds() <= window]
