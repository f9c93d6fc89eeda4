"""Doctor leases: a few elected doctors watch the mesh instead of one per node (presence in O(N)).

The KV bucket ``NXS_DOCTORS`` holds ``slots`` lease keys ``doctor.0`` .. ``doctor.<k-1>`` (k = 2 by
default). A process campaigns for one (``Campaign``, one per process and mesh, shared by the nodes
embedded there), and while it holds one, exactly one of its doctors is *active*: it subscribes to the
heartbeats and judges. Every other doctor stays passive and receives no heartbeat at all, so the
server delivers N heartbeats x (k + 1) per interval instead of N x (N + 1).

    free/absent --create or CAS--> held by P --P renews (CAS) every interval--> held by P
    held by P --revision unchanged for dead_after on *my* monotonic clock--> CAS by me (takeover)
    held by P --P stops cleanly--> free (CAS to an empty value)

Why this shape: the lease is judged expired by the watcher's own clock (a revision that has not moved
for ``dead_after`` since this process first saw it), never by a time the writer put in the value, so
clock skew cannot hand a slot to two processes; and only silence the watcher could watch counts (its
own failed or stalled polls start a fresh period, so an outage of the whole mesh flips no lease). A
holder counts itself valid only for ``dead_after - interval`` after the *send* time of its last
successful renewal: by the time anyone else may take its slot it alerts no more (``Lease.valid`` is the
fence the Doctor checks before it alerts; a late renewal only delays its alerts, a lost slot stands it
by). Two slots, not one, so that a kill -9 of one holder leaves a doctor watching: the second
holder still alerts on the deaths that come with it, while the slot is taken over. Passive processes
poll the slots every ``dead_after / 2`` (two small KV reads: about 280 B/s received with one node per
process, 17 B/s per node with 50 per process), which keeps their idle traffic under the 1 KB/s budget;
holders write one CAS per interval each.

The same bucket holds the one-writer elections of alerts (``a.<event>.<node>.<epoch>.<seq>``): a KV
create succeeds for exactly one doctor (``elect``); a winner that never wrote is replaced by CAS
(``take_over_election``). On a secure mesh admin creates the bucket (``node.provision``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.client.admin import Bucket, BucketSpec
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.wire.errors import ConfigError, MeshError

__all__ = ["BUCKET", "DEFAULT_SLOTS", "Campaign", "Lease", "alert_key", "campaign_for", "elect", "election_revision",
           "open_doctors_bucket", "take_over_election"]

log = logging.getLogger("nxs_mesh.node.lease")

BUCKET: Final = "NXS_DOCTORS"
DEFAULT_SLOTS: Final = 2
_FREE: Final = b""
# Election keys expire after a day; lease keys are rewritten every interval, so the ttl never bites them.
_SPEC: Final = BucketSpec(BUCKET, ttl=86400.0, description="doctor leases and one-writer alert elections")


async def open_doctors_bucket(mesh: Mesh) -> Bucket:
    return await mesh.admin.bucket(_SPEC)


def _kv_safe(key: str) -> str:
    return key.replace(":", "=")  # ids may hold ':', KV keys may not


def alert_key(event: str, node: str, epoch: str, seq: int) -> str:
    """The election key of one alert (the same event, node, incarnation and beat as its message id)."""
    return f"a.{event}.{node}.{epoch}.{seq}"


async def elect(bucket: Bucket, key: str, who: str) -> bool:
    """True for exactly one caller of ``key`` (within the bucket's ttl); ours too if an earlier attempt
    of ours was stored but its answer lost."""
    safe = _kv_safe(key)
    if await bucket.create(safe, who.encode()) is not None:
        return True
    entry = await bucket.get(safe)
    return entry is not None and entry.value == who.encode()


async def election_revision(bucket: Bucket, key: str) -> int:
    """The revision of ``key``'s election (0 when there is none)."""
    entry = await bucket.get(_kv_safe(key))
    return entry.revision if entry is not None else 0


async def take_over_election(bucket: Bucket, key: str, who: str, revision: int) -> bool:
    """Replace the winner of ``key`` seen at ``revision`` (a winner that never did its job), by CAS: True
    for exactly one caller; False when the key has moved on since."""
    return await bucket.update(_kv_safe(key), who.encode(), last=revision) is not None


def process_holder() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@dataclass
class _Seen:
    revision: int
    since: float  # our monotonic time when we first saw this revision
    checked: float  # ... and when we last saw it


class Lease:
    """One process's claim on one of ``slots`` lease keys (see the module docstring)."""

    def __init__(self, holder: str, *, slots: int = DEFAULT_SLOTS, dead_after: float = 5.0,
                 interval: float = 1.0) -> None:
        if slots < 1:
            raise ConfigError("slots", "must be at least 1 (how many doctors the mesh elects)")
        self.holder, self.slots, self.dead_after, self.interval = holder, slots, dead_after, interval
        self.held: int | None = None
        self.revision = 0
        self.renewed_at = 0.0  # monotonic send time of the last successful write
        self.node = ""  # which doctor of the process is active (shown in the value)
        self._seen: dict[int, _Seen] = {}

    def __repr__(self) -> str:
        slot = f"doctor.{self.held}" if self.held is not None else "no slot"
        return f"<Lease {self.holder} [{slot}, {'valid' if self.valid else 'not valid'}]>"

    @property
    def valid(self) -> bool:
        """Held, and renewed recently enough that no one else can have taken it over yet."""
        return self.held is not None and time.monotonic() - self.renewed_at < self.dead_after - self.interval

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder, "node": self.node}).encode()

    def _holder_of(self, value: bytes) -> str:
        try:
            return str(json.loads(value).get("holder", "")) if value else ""
        except (ValueError, AttributeError):
            return "?"  # someone else's format: treat it as held, expire it by its silence

    async def round(self, bucket: Bucket) -> bool:
        """Renew the slot we hold, or try to take one; returns ``valid``. MeshErrors propagate (the
        lease then decays by time alone)."""
        if self.held is not None:
            sent = time.monotonic()
            rev = await bucket.update(f"doctor.{self.held}", self._value(), last=self.revision)
            if rev is None:
                log.warning("%s lost doctor.%d (someone took it over)", self.holder, self.held)
                self.held = None
            else:
                self.revision, self.renewed_at = rev, sent
            return self.valid
        for slot in range(self.slots):
            if await self._try(bucket, slot):
                log.info("%s holds doctor.%d", self.holder, slot)
                return self.valid
        return False

    async def _try(self, bucket: Bucket, slot: int) -> bool:
        key, sent = f"doctor.{slot}", time.monotonic()
        entry = await bucket.get(key)
        if entry is None:
            rev = await bucket.create(key, self._value())
        else:
            holder = self._holder_of(entry.value)
            if holder not in ("", self.holder):
                seen = self._seen.get(slot)
                # A new revision, or one we could not watch (our polls failed or stalled: a silence we did
                # not observe, e.g. the whole mesh's outage) starts a fresh period.
                if seen is None or seen.revision != entry.revision or sent - seen.checked > self.dead_after:
                    self._seen[slot] = _Seen(entry.revision, sent, sent)
                    return False
                seen.checked = sent
                if sent - seen.since < self.dead_after:
                    return False
                log.warning("%s takes over doctor.%d from %s (silent %.1fs)", self.holder, slot, holder,
                            sent - seen.since)
            rev = await bucket.update(key, self._value(), last=entry.revision)
        if rev is None:
            return False
        self.held, self.revision, self.renewed_at = slot, rev, sent
        self._seen.pop(slot, None)
        return True

    async def release(self, bucket: Bucket) -> None:
        """Free the slot (a clean stop): the next campaigner takes it at once."""
        if self.held is None:
            return
        slot, self.held = self.held, None
        try:
            await bucket.update(f"doctor.{slot}", _FREE, last=self.revision)
        except MeshError as exc:
            log.info("%s could not release doctor.%d (%s); it expires", self.holder, slot, exc)


class Member(Protocol):
    """What a campaign needs of a doctor."""

    mesh: Mesh
    dead_after: float
    interval: float

    async def activate(self, valid: Callable[[], bool]) -> None: ...
    async def deactivate(self) -> None: ...


class Campaign:
    """The one campaigner of a process (per event loop and mesh): holds at most one lease slot and keeps
    exactly one member doctor active while the lease is valid. Members join on start, leave on stop;
    the last to leave releases the slot."""

    def __init__(self, slots: int, dead_after: float, interval: float, on_empty: Callable[[], None]) -> None:
        self.lease = Lease(process_holder(), slots=slots, dead_after=dead_after, interval=interval)
        self.members: list[Member] = []
        self.active: Member | None = None
        self._bucket: Bucket | None = None
        self._bucket_of: Mesh | None = None
        self._sup = Supervisor(f"campaign {self.lease.holder}")
        self._lock = asyncio.Lock()
        self._on_empty = on_empty
        self._failing = False  # rounds failing: logged once, as a warning

    def __repr__(self) -> str:
        active = self.active.mesh.config.instance_id if self.active is not None else "-"
        return f"<Campaign {self.lease!r} [{len(self.members)} members, active {active}]>"

    async def join(self, member: Member) -> None:
        """Add a doctor; the first join also runs the first round, so a fresh mesh has its doctors
        active by the time this returns (when a slot is free)."""
        self.members.append(member)
        if len(self.members) == 1:
            await self._round_quietly()
            self._sup.keep("campaign", self._loop)

    async def leave(self, member: Member) -> None:
        async with self._lock:
            self.members = [m for m in self.members if m is not member]
            if self.active is member:
                self.active = None
                await member.deactivate()
            if self.members:
                return
            self._on_empty()
            if self._bucket is not None and member.mesh.is_connected:
                await self.lease.release(self._bucket)
        await self._sup.stop(timeout=0)

    async def _loop(self) -> None:
        while self.members:
            await self._round_quietly()
            every = self.lease.interval if self.lease.held is not None else self.lease.dead_after / 2
            await asyncio.sleep(every)  # sleep-ok: the lease's renewal/poll clock

    async def _round_quietly(self) -> None:
        async with self._lock:
            if not self.members:
                return
            delegate = self.members[0]
            try:
                if self._bucket is None or self._bucket_of is not delegate.mesh:
                    self._bucket, self._bucket_of = await open_doctors_bucket(delegate.mesh), delegate.mesh
                self.lease.node = delegate.mesh.config.instance_id
                await self.lease.round(self._bucket)
                if self._failing:
                    self._failing = False
                    log.info("%s: lease rounds work again", self.lease.holder)
            except MeshError as exc:  # e.g. no quorum, or (secure mesh) NXS_DOCTORS not provisioned by admin
                log.log(logging.DEBUG if self._failing else logging.WARNING, "%s: lease round failed (%s: %s)",
                        self.lease.holder, type(exc).__name__, exc)
                self._failing = True
            # Active while the slot is ours (a late renewal only fences its alerts, see Lease.valid);
            # standing by once it is lost or was never won.
            await self._apply(delegate if self.lease.held is not None else None)

    async def _apply(self, want: Member | None) -> None:
        if self.active is want:
            return
        if self.active is not None:
            await self.active.deactivate()
        self.active = want
        if want is not None:
            try:
                await want.activate(lambda: self.lease.valid)
            except MeshError as exc:  # tried again next round
                log.warning("%s: could not activate its doctor (%s)", self.lease.holder, exc)
                self.active = None


_CAMPAIGNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], Campaign]] = (
    weakref.WeakKeyDictionary())


def campaign_for(mesh: Mesh, *, slots: int, dead_after: float, interval: float) -> Campaign:
    """The campaign of this process for this mesh (its server list): created by the first doctor."""
    per_loop = _CAMPAIGNS.setdefault(asyncio.get_running_loop(), {})
    key = tuple(mesh.config.servers)
    found = per_loop.get(key)
    if found is None:
        def forget() -> None:
            per_loop.pop(key, None)

        found = per_loop[key] = Campaign(slots, dead_after, interval, on_empty=forget)
    return found

