"""The Doctor: presence and failure detection from heartbeats, one alert per event mesh-wide.

Every worker has one; ``nxs doctor run`` runs one alone. Presence costs O(N) for the mesh: a worker's
doctor *campaigns* (``campaign=True``, what ``Node`` does) for one of a few lease slots (``slots``: k = 2
by default, one campaigner per process however many nodes it embeds), and only the doctors holding
one are *active*: they subscribe to ``nxs.heartbeat.*`` and ``nxs.status.*`` (plain subscriptions:
what matters is *when this doctor* hears a node) and judge. The others receive no heartbeat. A doctor
made with ``campaign=False`` (the default; ``nxs doctor run``, tests) is always active: one more watcher.

An active doctor times heartbeats with its own monotonic clock, never the sender's (states in
``presence``). Exactly one ALERT per death and per recovery, however many doctors watch: a KV election
picks the one writer, which runs the death hooks (``death_hooks``) and publishes; the alert's
``Nats-Msg-Id`` is derived from ``(event, node, epoch, seq)`` as a second guard (``presence_alerts``).
``epoch`` is the node's incarnation, ``seq`` its last heartbeat before the silence as NXS_HEARTBEAT
holds it, so every doctor computes the same key whatever it heard.

Only silence a doctor observed counts: while its own connection is down (or its lease is not valid) it
judges and alerts no one; once it is back, or after its loop stalled (a paused process), every node gets
a fresh period. A newer stored beat than the one it judged by means it was the one cut off: no alert,
it watches that node afresh. When it becomes active, and when its connection is back, it takes up from
NXS_HEARTBEAT (last beat per node) the nodes it has not heard (within ``CATCH_UP_WINDOW``), so a node
that published one heartbeat and died before this doctor listened, or a death during a takeover, is
still tracked to its death. It never judges itself. On a death it also asks the task layer to hand the
dead node's claimed tasks to live workers (see ``tasks``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from nxs_mesh.aio.retry import retrying
from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.node.lease import DEFAULT_SLOTS, Campaign, campaign_for
from nxs_mesh.node.presence import CATCH_UP_WINDOW, Peer, PeerState, beat_of, claims_of, stored_beats
from nxs_mesh.node.presence_alerts import AlertWriter, DeathHook, release_claims
from nxs_mesh.node.tasks import TaskStore
from nxs_mesh.wire.envelope import decode
from nxs_mesh.wire.errors import EnvelopeError, MeshError
from nxs_mesh.wire.ids import alert_id

__all__ = ["CATCH_UP_WINDOW", "DeathHook", "Doctor", "Peer", "PeerState", "alert_id"]

log = logging.getLogger("nxs_mesh.node.doctor")

AlertCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class Doctor:
    """Watch heartbeats (when active), publish death/recovery alerts, release dead nodes' tasks."""

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
        campaign: bool = False,
        slots: int = DEFAULT_SLOTS,
        death_hooks: Sequence[DeathHook] = (),
    ) -> None:
        self.mesh = mesh
        self.dead_after = dead_after
        self.suspect_after = suspect_after or min(dead_after / 2, max(2 * interval, dead_after / 5))
        self.check_every = max(0.02, min(interval / 2, dead_after / 10))
        self.interval = interval
        self.store = store
        self.redistribute = redistribute
        self.slots = slots
        self.peers: dict[str, Peer] = {}
        self.alerts_published = 0
        self._on_event = on_event
        self._subs: list[Any] = []
        self._sup = Supervisor(f"doctor {mesh.config.instance_id}", on_change=on_change)
        self._me = mesh.config.instance_id
        self._offline_since: float | None = None  # local time our own connection was seen down
        self._reopens = 0
        self._campaign: Campaign | None = None
        self._wants_campaign = campaign
        self._lease_valid: Callable[[], bool] | None = None  # set while active by a lease
        self._active = asyncio.Event()
        self._writer = AlertWriter(mesh, interval=interval, fence=self._may_alert, hooks=death_hooks)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for p in self.peers.values():
            counts[p.state] = counts.get(p.state, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no nodes"
        role = "active" if self.active else "standby"
        return f"<Doctor {self._me} {role} [{summary}; dead after {self.dead_after}s]>"

    @property
    def problems(self) -> dict[str, str]:
        return self._sup.problems

    @property
    def active(self) -> bool:
        """Subscribed to the heartbeats and judging (always, unless campaigning without a lease)."""
        return self._active.is_set()

    async def start(self) -> Doctor:
        """Start judging, or join this process's campaign for a lease (``campaign=True``). Returns once
        subscribed and caught up (unless the streams cannot be read yet: then soon after); a campaigning
        doctor returns after the first round, active if a slot was free."""
        self._sup.keep("watch", self._watch)
        if not self._wants_campaign:
            await self.activate(None)
            return self
        self._campaign = campaign_for(self.mesh, slots=self.slots, dead_after=self.dead_after,
                                      interval=self.interval)
        await self._campaign.join(self)
        return self

    async def stop(self) -> None:
        """Leave the campaign (the slot goes to another doctor of the process, or is released), stop
        listening and judging; alerts under way get 5 s to be stored."""
        if self._campaign is not None:
            campaign, self._campaign = self._campaign, None
            await campaign.leave(self)
        await self.deactivate()
        await self._sup.stop(timeout=5)

    async def activate(self, valid: Callable[[], bool] | None) -> None:
        """Become active: subscribe, catch up from the streams, judge. ``valid``: the lease's fence."""
        if self.active:
            return
        self._lease_valid, self._reopens, self._offline_since = valid, self.mesh.reopens, None
        log.info("doctor %s is active%s", self._me, " (lease)" if valid is not None else "")
        try:
            # One token per node: ``*`` is what a least-privileged node may subscribe to (deploy.permissions).
            for subject, callback in (("nxs.heartbeat.*", self._on_heartbeat), ("nxs.status.*", self._on_status)):
                self._subs.append(await self.mesh.subscribe(subject, callback))
        except MeshError:
            await self._unsubscribe()
            raise
        self._active.set()
        try:  # after subscribing, so that nothing published meanwhile falls between the two
            await self._catch_up()
        except MeshError as exc:
            log.warning("doctor %s could not read the streams yet (%s); retrying", self._me, exc)
            self._spawn(self._catch_up_soon())

    async def deactivate(self) -> None:
        """Stand by: no heartbeats received, no one judged (what it knew is dropped: the next activation
        catches up from the streams)."""
        if not self.active:
            return
        self._active.clear()
        log.info("doctor %s stands by", self._me)
        await self._unsubscribe()
        self.peers = {}

    async def _unsubscribe(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except MeshError as exc:
                log.debug("doctor %s: unsubscribe failed (%s)", self._me, exc)

    def _may_alert(self) -> bool | None:
        """The fence before an alert: True when active, connected and the lease (if any) valid; None
        ("not now": retried) while disconnected or the lease is late to renew; False once standing by."""
        if not self.active:
            return False
        return True if self.mesh.is_connected and (self._lease_valid is None or self._lease_valid()) else None

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
        if (beat := beat_of(env)) is None or not self.mesh.accepts(env, subject, data, headers):
            return
        epoch, seq, hb = beat
        node = env.source.instance_id
        peer = self.peers.get(node)
        if peer is None or peer.epoch != epoch:
            if peer is not None and peer.state is PeerState.DEAD:
                self._spawn(self._alert("recovered", peer, detail={"new_epoch": epoch, "restarted": True}))
            self.peers[node] = Peer.first_heard(env, beat, now)
            return
        if seq <= peer.seq:
            return  # reordered (older news), or a duplicate: MQTT has no Nats-Msg-Id, (epoch, seq) is the key
        was = peer.state
        peer.seq, peer.last_seen, peer.claims = seq, now, claims_of(hb)
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
        now, taken = time.monotonic(), 0
        for found in await stored_beats(self.mesh):
            node, (epoch, seq, hb) = found.node, found.beat
            if node == self._me or not self.active:
                continue
            peer = self.peers.get(node)
            if peer is None:
                self.peers[node] = Peer.first_heard(found.envelope, found.beat, now)
                taken += 1
                log.debug("doctor %s takes up %s from the stream (seq %d)", self._me, node, seq)
            elif peer.epoch == epoch and seq > peer.seq and peer.state in (PeerState.ALIVE, PeerState.SUSPECT):
                peer.seq, peer.claims, peer.last_seen = seq, claims_of(hb), max(peer.last_seen, now)
        if taken:
            log.info("doctor %s took up %d node(s) from the stream", self._me, taken)
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
            if not self.active:
                await self._active.wait()
                last_tick = time.monotonic()
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
        if self.redistribute and peer.claims and self.store is not None and self._may_alert() is True:
            released = await release_claims(self.mesh, self.store, peer, self._me)
        await self._alert("dead", peer, detail={"silent_for": round(silent, 3), "claims": len(peer.claims),
                                                "released": released})

    async def _alert(self, event: str, peer: Peer, *, detail: dict[str, Any]) -> None:
        if event == "recovered":
            await peer.alert_settled.wait()
            if not peer.alerted:
                return  # its death was never alerted (see below), so neither is its recovery
        try:
            sent = await self._writer.send(event, peer, detail)
        finally:
            if event == "dead":
                peer.alert_settled.set()
        if sent is None:
            return
        duplicate, content = sent  # (the content as sent: its seq may come from the stream)
        peer.alerted = event == "dead"
        if not duplicate:
            self.alerts_published += 1
            log.warning("ALERT %s: %s (%s)", event, peer.node, detail)
        if self._on_event is not None:
            result = self._on_event({**content, "duplicate": duplicate})
            if asyncio.iscoroutine(result):
                await result
