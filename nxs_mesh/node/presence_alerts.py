"""One alert writer per event: confirm against the quorum's view, elect, run the death hooks, publish.

A doctor that judged a node dead (or back) does not publish at once:

1. **Confirm** (deaths): the node's last beat in NXS_HEARTBEAT is the quorum's view. A newer one than
   the doctor judged by means the doctor was the one cut off: no death, the node is watched afresh.
   Otherwise that stored beat keys the alert, the same for every doctor.
2. **Fence**: the doctor must still be connected and (when elected by a lease) hold a valid lease.
   While it is not (disconnected, a renewal late) it waits and confirms again; a doctor that lost its
   lease (standing by) publishes nothing: the doctor that took its place alerts.
3. **Elect**: a KV create of ``a.<event>.<node>.<epoch>.<seq>`` in NXS_DOCTORS succeeds for exactly one
   doctor; the others count the event as alerted by someone else (``duplicate``). A loser checks that
   the winner's alert was stored; if it is not within ``follow_up`` seconds (the winner died between
   its election and its publish), one loser replaces the winner by CAS on the key and writes it.
4. The winner runs the **death hooks** (``hook(node) -> Awaitable[Mapping]``; results merged into the
   alert content, failures logged and noted) and publishes the ALERT. Its ``Nats-Msg-Id`` is still
   derived from ``(event, node, epoch, seq)``: a second guard, so a retried publish is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from nxs_mesh.aio.retry import backoff_delay, retrying
from nxs_mesh.client.admin import Bucket
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.node.lease import alert_key, elect, election_revision, open_doctors_bucket, take_over_election
from nxs_mesh.node.presence import Peer, PeerState, beat_of
from nxs_mesh.node.tasks import TaskStore
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, new_envelope
from nxs_mesh.wire.errors import MeshError, MeshTimeout
from nxs_mesh.wire.ids import alert_id

__all__ = ["AlertWriter", "DeathHook", "release_claims"]

log = logging.getLogger("nxs_mesh.node.doctor")

DeathHook = Callable[[str], Awaitable[Mapping[str, Any]]]
T = TypeVar("T")
_GIVE_UP_AFTER = 120.0
_HOOK_TIMEOUT = 10.0
_FOLLOW_UP = 3.0  # seconds past the hooks' time a winner gets to store its alert


class AlertWriter:
    """The alerting half of a Doctor (see the module docstring)."""

    def __init__(self, mesh: Mesh, *, interval: float, fence: Callable[[], bool | None],
                 hooks: Sequence[DeathHook] = ()) -> None:
        self.mesh, self.interval, self.fence, self.hooks = mesh, interval, fence, tuple(hooks)
        self.me = mesh.config.instance_id
        self._bucket: Bucket | None = None

    async def send(self, event: str, peer: Peer, detail: dict[str, Any]) -> tuple[bool, dict[str, Any]] | None:
        """``(duplicate, content)`` once the event is alerted (by us, or by the doctor that won its
        election: then ``duplicate``); None when it is not to be alerted (by us)."""
        what = f"{event} alert for {peer.node}"
        won = await self._attempts(what, lambda: self._decide(event, peer))
        if won is None:
            return None
        if not won and not await self._attempts(what, lambda: self._winner_failed(event, peer)):
            return True, self._envelope(event, peer, detail)[1]
        if event == "dead":
            detail = {**detail, **await self._run_hooks(peer.node)}
        env, content = self._envelope(event, peer, detail)
        ack = await self._attempts(f"{event} alert for {peer.node}", lambda: self.mesh.send(env))
        return None if ack is None else (ack.duplicate, content)

    async def _decide(self, event: str, peer: Peer) -> bool | None:
        if event == "dead" and peer.state is not PeerState.DEAD:
            log.info("not alerting %s: it is back before its death could be recorded", peer.node)
            return None
        if event == "dead" and not await self.confirm_death(peer):
            return None
        fenced = self.fence()
        if fenced is None:  # disconnected, or the lease is late: retried (and confirmed again) later
            raise MeshTimeout("no connection or no valid lease right now")
        if not fenced:
            log.warning("doctor %s does not alert %s %s: it stands by (lost its lease)", self.me, event, peer.node)
            return None
        if self._bucket is None:
            self._bucket = await open_doctors_bucket(self.mesh)
        return await elect(self._bucket, alert_key(event, peer.node, peer.epoch, self._seq(peer)), self.me)

    async def _winner_failed(self, event: str, peer: Peer) -> bool:
        """After losing: True when the winner's alert is not stored in time and we replaced the winner."""
        assert self._bucket is not None
        key, wanted = alert_key(event, peer.node, peer.epoch, self._seq(peer)), alert_id(
            event, peer.node, peer.epoch, self._seq(peer))
        winner = await election_revision(self._bucket, key)
        deadline = time.monotonic() + _FOLLOW_UP + _HOOK_TIMEOUT * len(self.hooks) * (event == "dead")
        while True:
            await asyncio.sleep(self.interval)  # sleep-ok: the winner's time to publish, checked each interval
            rec = await self.mesh.last("alert", subjects.alert(peer.node))
            if rec is not None and rec.envelope is not None and rec.envelope.id == wanted:
                return False
            if time.monotonic() > deadline:
                break
        if not winner or self.fence() is not True or not await take_over_election(self._bucket, key, self.me, winner):
            return False
        log.warning("doctor %s writes the %s alert for %s: its elected writer never stored it", self.me, event,
                    peer.node)
        return True

    async def _attempts(self, what: str, fn: Callable[[], Awaitable[T]]) -> T | None:
        """``fn()`` retried through leader elections; a retry waits two heartbeat intervals, so a doctor
        that was the one cut off hears the others again first. None after two minutes of failures."""
        deadline, attempt = time.monotonic() + _GIVE_UP_AFTER, 0
        while True:
            try:
                return await fn()
            except MeshError as exc:
                attempt += 1
                if time.monotonic() > deadline:
                    log.error("could not settle %s: %s", what, exc)
                    return None
                delay = max(backoff_delay(attempt, base=0.1, cap=2.0, jitter=False), 2 * self.interval)
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)  # sleep-ok: backoff between retries

    async def confirm_death(self, peer: Peer) -> bool:
        """Check a verdict against NXS_HEARTBEAT (step 1 of the module docstring)."""
        rec = await self.mesh.last("heartbeat", subjects.heartbeat(peer.node))
        beat = beat_of(rec.envelope) if rec is not None else None
        if beat is None or beat[0] != peer.epoch:
            return True  # nothing stored of this incarnation (or a newer one): key by what we heard
        seq = beat[1]
        if seq > peer.died_seq:
            log.warning("not alerting %s: the mesh stored a newer heartbeat (%d > %d); watching it afresh",
                        peer.node, seq, peer.died_seq)
            peer.seq, peer.last_seen, peer.state = max(peer.seq, seq), time.monotonic(), PeerState.ALIVE
            return False
        peer.died_seq = seq
        return True

    async def _run_hooks(self, node: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for hook in self.hooks:
            name = getattr(hook, "__qualname__", repr(hook))
            try:
                merged.update(await asyncio.wait_for(hook(node), _HOOK_TIMEOUT))
            except Exception as exc:  # noqa: BLE001 - a hook's failure is noted, never fatal
                log.error("death hook %s failed for %s: %r", name, node, exc)
                merged.setdefault("hook_errors", []).append(f"{name}: {type(exc).__name__}: {exc}")
        return merged

    @staticmethod
    def _seq(peer: Peer) -> int:
        return peer.died_seq if peer.died_seq >= 0 else peer.seq

    def _envelope(self, event: str, peer: Peer, detail: dict[str, Any]) -> tuple[Envelope, dict[str, Any]]:
        seq, dead = self._seq(peer), event == "dead"
        content = {"event": event, "node": peer.node, "location": peer.location, "epoch": peer.epoch,
                   "seq": seq, "detected_by": self.me, **detail}
        return new_envelope(
            "ALERT", content, source=self.mesh.source, to=peer.node, priority=8 if dead else 5, ttl=0,
            metadata={"node": peer.node, "event": event, "severity": "critical" if dead else "info"},
            message_id=alert_id(event, peer.node, peer.epoch, seq)), content


async def release_claims(mesh: Mesh, store: TaskStore, peer: Peer, me: str) -> int:
    """Nak the dead node's claimed deliveries so JetStream hands them to live workers now (one doctor
    does it: the winner of ``r.<node>.<epoch>.<seq>`` in NXS_TASKS)."""
    try:
        key = f"r.{peer.node}.{peer.epoch}.{peer.seq}"
        if not await retrying(lambda: store.elect(key, me), f"release election for {peer.node}", timeout=30):
            return 0
        await mesh.admin.release([s for s in peer.claims.values() if isinstance(s, str)])
    except MeshError as exc:  # the ack wait is the fallback
        log.error("could not release tasks of %s: %r (they return after the ack wait)", peer.node, exc)
        return 0
    log.warning("released %d task(s) of dead node %s", len(peer.claims), peer.node)
    return len(peer.claims)
