"""The Doctor: presence and failure detection from heartbeats, one alert per event mesh-wide.

Every worker runs one; ``nxs doctor run`` runs one alone. It listens to ``nxs.heartbeat.>`` and
``nxs.status.>`` (plain subscriptions: cheap, and what matters is *when this doctor* hears a node)
and times them with its own monotonic clock, never the sender's. A node it has heard is:

    alive --(no heartbeat for suspect_after)--> suspect --(dead_after)--> dead
      ^                                                                    |
      +---------------------- heartbeat again: "recovered" ----------------+
    any state --(status "stopped": a clean exit)--> stopped (never "dead")

Exactly one ALERT per death and per recovery, however many doctors watch: its message id (so its
``Nats-Msg-Id``) is derived from ``(event, node, epoch, seq)``: ``epoch`` is the node's incarnation
(a boot id in every heartbeat), ``seq`` its last heartbeat before the silence as NXS_HEARTBEAT holds
it (read back before alerting, so every doctor computes the same id whatever it heard), and
NXS_ALERT's duplicate window stores one. A new incarnation, or a later second death, is alerted again.

Only silence a doctor observed counts: while its own connection is down it judges no one; once it is
back, or after its loop stalled (a paused process), every node gets a fresh period. A newer stored beat
than the one it judged by means it was the one cut off: no alert, it watches that node afresh. When it
starts, and when its connection is back, it takes up from NXS_HEARTBEAT the nodes it has not heard
(within ``CATCH_UP_WINDOW``), so a node that published one heartbeat and died before this doctor
listened is still tracked to its death. It never judges itself. On a death it also asks the task layer
to hand the dead node's claimed tasks to live workers (see ``tasks``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nxs_mesh.aio.retry import backoff_delay, retrying
from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.client.admin import STREAMS
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.node.tasks import TaskStore
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, decode, new_envelope
from nxs_mesh.wire.errors import EnvelopeError, MeshError
from nxs_mesh.wire.ids import alert_id

__all__ = ["Doctor", "Peer", "PeerState", "alert_id"]

log = logging.getLogger("nxs_mesh.node.doctor")

AlertCallback = Callable[[dict[str, Any]], Awaitable[None] | None]

# How old a stored heartbeat a doctor that did not hear it may take up: its alert then follows any
# other doctor's within NXS_ALERT's duplicate window (so it is stored once).
CATCH_UP_WINDOW: float = next(s.duplicate_window for s in STREAMS if s.name == "NXS_ALERT") / 2


def _beat_of(env: Envelope | None) -> tuple[str, int, dict[str, Any]] | None:
    """``(epoch, seq, content)`` of a heartbeat envelope, or None when it is not a usable one."""
    hb = env.content if env is not None and isinstance(env.content, dict) else {}
    epoch, seq = str(hb.get("epoch", "")), hb.get("seq", 0)
    if not epoch or not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return epoch, seq, hb


def _claims(hb: dict[str, Any]) -> dict[str, str]:
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
    def first_heard(cls, env: Envelope, beat: tuple[str, int, dict[str, Any]], at: float) -> Peer:
        epoch, seq, hb = beat
        return cls(env.source.instance_id, epoch, seq, at, reported=str(hb.get("state", "running")),
                   location=env.source.location, claims=_claims(hb))

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.monotonic()) - self.last_seen


class Doctor:
    """Watch heartbeats, publish death/recovery alerts, release dead nodes' tasks."""

    def __init__(
        self,
        mesh: Mesh,
        *,
        dead_after: float = 5.0,
        interval: float = 1.0,
        suspect_after: float | None = None,
        store: TaskStore | None = None,
        on_event: AlertCallback | None = None,
        redistribute: bool = True,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.mesh = mesh
        self.dead_after = dead_after
        self.suspect_after = suspect_after or min(dead_after / 2, max(2 * interval, dead_after / 5))
        self.check_every = max(0.02, min(interval / 2, dead_after / 10))
        self.interval = interval
        self.store = store
        self.redistribute = redistribute
        self.peers: dict[str, Peer] = {}
        self.alerts_published = 0
        self._on_event = on_event
        self._subs: list[Any] = []
        self._sup = Supervisor(f"doctor {mesh.config.instance_id}", on_change=on_change)
        self._me = mesh.config.instance_id
        self._offline_since: float | None = None  # local time our own connection was seen down
        self._reopens = 0

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for p in self.peers.values():
            counts[p.state] = counts.get(p.state, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no nodes"
        return f"<Doctor {self._me} [{summary}; dead after {self.dead_after}s]>"

    @property
    def problems(self) -> dict[str, str]:
        return self._sup.problems

    async def start(self) -> Doctor:
        """Subscribe to heartbeats and statuses, take up the nodes the streams know, start judging;
        returns once subscribed (and caught up, unless the streams cannot be read yet: then soon after)."""
        self._reopens = self.mesh.reopens
        self._subs = [
            await self.mesh.subscribe("nxs.heartbeat.>", self._on_heartbeat),
            await self.mesh.subscribe("nxs.status.>", self._on_status),
        ]
        try:  # after subscribing, so that nothing published meanwhile falls between the two
            await self._catch_up()
        except MeshError as exc:
            log.warning("doctor %s could not read the streams yet (%s); retrying", self._me, exc)
            self._spawn(self._catch_up_soon())
        self._sup.keep("watch", self._watch)
        return self

    async def stop(self) -> None:
        """Stop listening and judging; alerts under way get 5 s to be stored."""
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = []
        await self._sup.stop(timeout=5)

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"node": p.node, "state": p.state, "reported": p.reported, "age": round(p.age(now), 3),
                 "epoch": p.epoch, "location": p.location, "claims": len(p.claims)}
                for p in sorted(self.peers.values(), key=lambda p: p.node)]

    # -- input -------------------------------------------------------------------------------------
    async def _on_heartbeat(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        now = time.monotonic()
        try:
            env = decode(data)
        except EnvelopeError:
            return  # garbage on a heartbeat subject is not a heartbeat; the stream keeps it for inspection
        if (beat := _beat_of(env)) is None or not self.mesh.accepts(env, subject, data, headers):
            return
        epoch, seq, hb = beat
        node = env.source.instance_id
        peer = self.peers.get(node)
        if peer is None or peer.epoch != epoch:
            if peer is not None and peer.state is PeerState.DEAD:
                self._spawn(self._alert("recovered", peer, detail={"new_epoch": epoch, "restarted": True}))
            self.peers[node] = Peer.first_heard(env, beat, now)
            return
        if seq < peer.seq:
            return  # reordered, older news
        was = peer.state
        peer.seq, peer.last_seen, peer.claims = seq, now, _claims(hb)
        peer.reported = str(hb.get("state", peer.reported))
        if was is PeerState.DEAD:
            self._spawn(self._alert("recovered", peer, detail={"restarted": False}))
        if peer.reported == "stopped":
            peer.state = PeerState.STOPPED
        else:
            peer.state = PeerState.ALIVE

    async def _on_status(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        try:
            env = decode(data)
        except EnvelopeError:
            return
        st = env.content if isinstance(env.content, dict) and self.mesh.accepts(env, subject, data, headers) else {}
        peer = self.peers.get(env.source.instance_id)
        if peer is None or st.get("epoch") != peer.epoch:
            return
        peer.reported = str(st.get("state", peer.reported))
        if peer.reported == "stopped":
            peer.state = PeerState.STOPPED  # a clean exit: silence from now on is expected

    async def _catch_up(self) -> int:
        """Take up the nodes whose recent beats the stream holds but we did not hear (we started after
        them, or were away), with a fresh period: that silence we did not observe. A known node's newer
        stored beat of the same incarnation is adopted. Clean stops are left alone. Returns how many."""
        stopped: dict[str, str] = {}
        async for rec in self.mesh.tail("status"):
            env = rec.envelope
            if env is not None and isinstance(env.content, dict) and env.content.get("state") == "stopped":
                stopped[env.source.instance_id] = str(env.content.get("epoch", ""))
        stored = [(rec, b) async for rec in self.mesh.tail("heartbeat") if (b := _beat_of(rec.envelope))]
        # "Recent" against the newest stored beat (the server's clock) or our wall clock if later: a
        # skewed clock can only leave nodes out, and a mesh with no live node does not make old news.
        ref, now, taken = max([datetime.now(UTC), *(rec.stored_at for rec, _ in stored)]), time.monotonic(), 0
        for rec, (epoch, seq, hb) in stored:
            assert rec.envelope is not None
            node = rec.envelope.source.instance_id
            if (node == self._me or hb.get("state") == "stopped" or stopped.get(node) == epoch
                    or (ref - rec.stored_at).total_seconds() > CATCH_UP_WINDOW):
                continue
            peer = self.peers.get(node)
            if peer is None:
                self.peers[node] = Peer.first_heard(rec.envelope, (epoch, seq, hb), now)
                taken += 1
                log.info("doctor %s takes up %s from the stream (seq %d)", self._me, node, seq)
            elif peer.epoch == epoch and seq > peer.seq and peer.state in (PeerState.ALIVE, PeerState.SUSPECT):
                peer.seq, peer.claims, peer.last_seen = seq, _claims(hb), max(peer.last_seen, now)
        return taken

    async def _catch_up_soon(self) -> None:
        try:
            await retrying(self._catch_up, f"doctor {self._me} reading the streams", timeout=60)
        except MeshError as exc:
            log.error("doctor %s could not read the streams (%s): it judges only nodes it hears", self._me, exc)

    # -- judgement ---------------------------------------------------------------------------------
    async def _watch(self) -> None:
        last_tick = time.monotonic()
        while True:
            await asyncio.sleep(self.check_every)  # sleep-ok: the doctor's clock
            now = time.monotonic()
            if now - last_tick > max(3 * self.check_every, self.dead_after / 2):  # paused, blocked loop
                self._fresh_period(now, f"stalled {now - last_tick:.1f}s")  # our silence, not theirs
            last_tick = now
            if not self._connected(now):
                continue  # we cannot hear anyone: silence now says nothing about them
            for peer in list(self.peers.values()):
                self._judge(peer, now)

    def _connected(self, now: float) -> bool:
        """False while our own connection is down. Once it is back (seen down at a check, or reopened
        since the last one) we may have missed anyone's heartbeats: every node gets a fresh period, and
        the streams are read for nodes that appeared only while we were away."""
        if not self.mesh.is_connected:
            if self._offline_since is None:
                self._offline_since = now
                log.warning("doctor %s is disconnected: judging no one until it is back", self._me)
            return False
        if self._offline_since is None and self.mesh.reopens == self._reopens:
            return True
        away, self._offline_since, self._reopens = now - (self._offline_since or now), None, self.mesh.reopens
        self._fresh_period(now, f"was disconnected {away:.1f}s")
        self._spawn(self._catch_up_soon())
        return True

    def _fresh_period(self, now: float, why: str) -> None:
        log.warning("doctor %s %s; giving every node a fresh period", self._me, why)
        for p in self.peers.values():
            p.last_seen = max(p.last_seen, now)
            if p.state is PeerState.SUSPECT:
                p.state = PeerState.ALIVE

    def _judge(self, peer: Peer, now: float) -> None:
        if peer.node == self._me or peer.state in (PeerState.DEAD, PeerState.STOPPED):
            return
        age = now - peer.last_seen
        if age > self.dead_after:
            peer.state, peer.died_seq, peer.died_at = PeerState.DEAD, peer.seq, now
            peer.alerted = False
            peer.alert_settled = asyncio.Event()
            self._spawn(self._on_death(peer, age))
        elif age > self.suspect_after and peer.state is PeerState.ALIVE:
            peer.state = PeerState.SUSPECT
            log.info("node %s is suspect (silent %.1fs)", peer.node, age)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._sup.spawn("action", coro)

    async def _on_death(self, peer: Peer, silent: float) -> None:
        log.warning("node %s is dead (silent %.2fs, %d claimed tasks)", peer.node, silent, len(peer.claims))
        released = 0
        if self.redistribute and peer.claims and self.store is not None:
            released = await self._release(peer)
        await self._alert("dead", peer, detail={"silent_for": round(silent, 3), "claims": len(peer.claims),
                                                "released": released})

    async def _release(self, peer: Peer) -> int:
        """Nak the dead node's claimed deliveries so JetStream hands them to live workers now."""
        assert self.store is not None
        try:
            store = self.store
            key = f"r.{peer.node}.{peer.epoch}.{peer.seq}"
            if not await retrying(lambda: store.elect(key, self._me), f"release election for {peer.node}", timeout=30):
                return 0
            await self.mesh.admin.release([s for s in peer.claims.values() if isinstance(s, str)])
        except MeshError as exc:  # the ack wait is the fallback
            log.error("could not release tasks of %s: %r (they return after the ack wait)", peer.node, exc)
            return 0
        log.warning("released %d task(s) of dead node %s", len(peer.claims), peer.node)
        return len(peer.claims)

    async def _send_alert(self, event: str, peer: Peer, detail: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        """Publish directly (never via an outbox), retried through leader elections (the id makes a
        repeat harmless); a death over before its alert is stored is not alerted late. A retry waits
        two heartbeat intervals, so a doctor that was the one cut off hears the others again first."""
        deadline = time.monotonic() + 120
        attempt = 0
        while True:
            if event == "dead" and peer.state is not PeerState.DEAD:
                log.info("not alerting %s: it is back before its death could be recorded", peer.node)
                return None
            try:
                if event == "dead" and not await self._confirm_death(peer):
                    return None
                env, content = self._alert_envelope(event, peer, detail)
                return await self.mesh.send(env), content
            except MeshError as exc:
                attempt += 1
                if time.monotonic() > deadline:
                    log.error("could not publish %s alert for %s: %s", event, peer.node, exc)
                    return None
                delay = max(backoff_delay(attempt, base=0.1, cap=2.0, jitter=False), 2 * self.interval)
                log.warning("%s alert for %s failed (%s); retrying in %.1fs", event, peer.node, exc, delay)
                await asyncio.sleep(delay)  # sleep-ok: backoff between retries

    async def _confirm_death(self, peer: Peer) -> bool:
        """Check a verdict against the quorum's view, the node's last beat in NXS_HEARTBEAT: a newer one
        than we judged by means we were cut off (no death; watched afresh, judged again if need be);
        otherwise that stored beat keys the alert, the same for every doctor."""
        rec = await self.mesh.last("heartbeat", subjects.heartbeat(peer.node))
        beat = _beat_of(rec.envelope) if rec is not None else None
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

    def _alert_envelope(self, event: str, peer: Peer, detail: dict[str, Any]) -> tuple[Envelope, dict[str, Any]]:
        seq, dead = (peer.died_seq if peer.died_seq >= 0 else peer.seq), event == "dead"
        content = {"event": event, "node": peer.node, "location": peer.location, "epoch": peer.epoch,
                   "seq": seq, "detected_by": self._me, **detail}
        return new_envelope(
            "ALERT", content, source=self.mesh.source, to=peer.node, priority=8 if dead else 5, ttl=0,
            metadata={"node": peer.node, "event": event, "severity": "critical" if dead else "info"},
            message_id=alert_id(event, peer.node, peer.epoch, seq)), content

    async def _alert(self, event: str, peer: Peer, *, detail: dict[str, Any]) -> None:
        if event == "recovered":
            await peer.alert_settled.wait()
            if not peer.alerted:
                return  # its death was never alerted (see below), so neither is its recovery
        try:
            sent = await self._send_alert(event, peer, detail)
        finally:
            if event == "dead":
                peer.alert_settled.set()
        if sent is None:
            return
        ack, content = sent  # (the content as sent: its seq may come from the stream)
        peer.alerted = event == "dead"
        if not ack.duplicate:
            self.alerts_published += 1
            log.warning("ALERT %s: %s (%s)", event, peer.node, detail)
        if self._on_event is not None:
            result = self._on_event({**content, "duplicate": ack.duplicate})
            if asyncio.iscoroutine(result):
                await result
