"""Exactly-once handling for a consumer group: a processed-id record shared by every member.

Each member of a durable consumer remembers the ids it acked, but only its own: after a consumer
leader dies, acks it had not replicated are lost and JetStream redelivers those messages, perhaps
to the other member, which runs them again. With ``exactly_once`` the members share one record per
(group, message id) in the KV bucket ``NXS_ONCE``, written with compare-and-set:

1. **Claim** before the handler: ``create`` the key with (member, stream sequence, delivery count).
   Only one creator wins; a create whose answer was lost is recognised as ours when read back.
2. **Done** after the handler returned (and before the ack): update the key from the claim's
   revision. A redelivery that finds ``done`` is acked without calling the handler.
3. **Takeover.** A claim is only as good as the delivery it was made for. A delivery of the same
   stream message with a *higher* delivery count means JetStream gave up on the earlier one (its
   handler failed and nak'd, the Doctor released a dead worker's claim, or its ack wait ran out):
   the new holder takes the record over by CAS. A delivery with a lower or equal count, held while
   another member's claim stands, is left alone (neither ack nor nak, which would make JetStream
   hand the message out again under the running handler). Another stored copy of the same id (a
   re-publish past the stream's duplicate window) is nak'd with a delay and finds ``done`` later.

**Guarantee**: within ``horizon`` (the bucket's ttl, 1 h by default) of a message's first claim, no
second handler call for its id in the group, across members, restarts and consumer leader
failovers, as long as the holder's delivery outlives the work: the handler plus its two writes
must end within the consumer's ack wait (kept alive by in-progress acks), and the ack wait must
outlast a leader election of the consumer or the bucket (a few seconds; it is 30 s by default).
A delivery JetStream has already handed to another member (a stalled or partitioned member, a
leader failover longer than the ack wait) is taken over, and its handler can run twice: that is the
limit of any lease. For tasks the claim fencing in ``node.tasks`` still records one completion then.

**Cost**: two KV writes per handled message (a replicated JetStream publish each: one round trip
to the bucket's leader before the handler and one after it), plus one record per message kept for
``horizon``. ``nxs bench once`` measures it against the same consumer without it.
"""

from __future__ import annotations

import enum
import uuid
from typing import Final

from nxs_mesh.aio.retry import retrying
from nxs_mesh.client.admin import MeshAdmin
from nxs_mesh.transport.buckets import Bucket, BucketSpec, Entry
from nxs_mesh.transport.pull import Meta

__all__ = ["ONCE_BUCKET", "ONCE_HORIZON", "OnceGuard", "Verdict", "open_guard"]

ONCE_BUCKET: Final = "NXS_ONCE"
#: How long a processed-id record lives: far beyond any redelivery of a handled message (ack wait
#: times a few deliveries) and the stream's duplicate window (2 min).
ONCE_HORIZON: Final = 3600.0
_DONE: Final = b"d"


class Verdict(enum.Enum):
    RUN = "run"  # ours: call the handler
    DONE = "done"  # handled before: ack without calling it
    WAIT = "wait"  # another stored copy of this id is being handled: nak with a delay
    LEAVE = "leave"  # another member holds this message (or a newer delivery of it): leave it alone


class OnceGuard:
    """The shared processed-id record of one consumer group, as seen by one member."""

    def __init__(self, bucket: Bucket, group: str, *, timeout: float = 10.0) -> None:
        self.bucket, self.group, self.timeout = bucket, group.replace(":", "="), timeout
        self.member = uuid.uuid4().hex[:12]  # this consumer instance (a restart is another member)

    def __repr__(self) -> str:
        return f"<OnceGuard {self.bucket.name}/{self.group} member {self.member}>"

    async def begin(self, message_id: str, meta: Meta) -> tuple[Verdict, int]:
        """Claim ``message_id`` for this delivery; ``(RUN, token)`` when the handler may run."""
        key = f"{self.group}.{message_id}"
        mine = b"r %s %d %d" % (self.member.encode(), meta.stream_seq, meta.num_delivered)
        rev = await retrying(lambda: self.bucket.create(key, mine), f"claim {key}", timeout=self.timeout)
        if rev is not None:
            return Verdict.RUN, rev
        for _ in range(3):  # a takeover can race with another member's: read and decide again
            entry = await retrying(lambda: self.bucket.get(key), f"read {key}", timeout=self.timeout)
            if entry is None:  # expired in between: claim afresh
                rev = await self.bucket.create(key, mine)
            else:
                verdict = _decide(entry, mine, meta)
                if verdict is not None:
                    return verdict, entry.revision
                rev = await self._write(key, mine, entry.revision)
            if rev is not None:
                return Verdict.RUN, rev
        return Verdict.LEAVE, 0

    async def finish(self, message_id: str, token: int) -> bool:
        """Record the message handled, from our claim's revision; False if another member took it over.
        Retried twice as long as a claim: the handler has run, and acking without the record would let
        a lost ack run it again (the delivery is kept alive meanwhile)."""
        key = f"{self.group}.{message_id}"
        return await self._write(key, _DONE + b" " + self.member.encode(), token, timeout=2 * self.timeout) is not None

    async def _write(self, key: str, value: bytes, last: int, *, timeout: float | None = None) -> int | None:
        """CAS ``key`` from ``last``, retried through elections; an update stored but unanswered is ours."""
        rev = await retrying(lambda: self.bucket.update(key, value, last=last), f"update {key}",
                             timeout=timeout or self.timeout)
        if rev is None:
            entry = await self.bucket.get(key)
            if entry is not None and entry.value == value:
                return entry.revision
        return rev


def _decide(entry: Entry, mine: bytes, meta: Meta) -> Verdict | None:
    """What the stored record says about our delivery; None means: take the record over."""
    value = entry.value
    if value[:1] == _DONE:
        return Verdict.DONE
    if value == mine:
        return Verdict.RUN  # our own claim, stored though its answer was lost
    try:
        _, _member, seq, delivered = value.split(b" ")
        seq_n, delivered_n = int(seq), int(delivered)
    except ValueError:
        return None  # unreadable: ours to rewrite
    if seq_n != meta.stream_seq:
        return Verdict.WAIT
    if delivered_n >= meta.num_delivered:
        return Verdict.LEAVE
    return None


async def open_guard(admin: MeshAdmin, group: str, *, horizon: float = ONCE_HORIZON,
                     timeout: float = 10.0) -> OnceGuard:
    """The guard of consumer group ``group`` (its durable name), binding or creating ``NXS_ONCE``.

        guard = await open_guard(mesh.admin, "task-resize")
    """
    spec = BucketSpec(ONCE_BUCKET, ttl=horizon, description="processed message ids of exactly-once consumer groups")
    return OnceGuard(await admin.bucket(spec), group, timeout=timeout)
