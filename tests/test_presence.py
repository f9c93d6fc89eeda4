"""Presence in O(N): doctors elected by lease, one alert writer per death, idle traffic in budget.

Real servers and worker processes; the doctors here are the workers' own (campaigning) ones unless a
test says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from node_support import DEAD_AFTER, HB, Worker, alerts_about, wait_state
from nxs_cli.bench.worker import node_connections

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.client.admin import Bucket
from nxs_mesh.node.checkup import list_nodes
from nxs_mesh.node.doctor import Doctor
from nxs_mesh.node.lease import alert_key, elect, open_doctors_bucket
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire.errors import ConfigError


async def slot_holders(bucket: Bucket, slots: int = 2) -> dict[int, str]:
    """slot -> the node whose doctor holds it (free slots left out)."""
    out = {}
    for i in range(slots):
        entry = await bucket.get(f"doctor.{i}")
        if entry is not None and entry.value:
            out[i] = json.loads(entry.value)["node"]
    return out


def alert_clock(got: dict[str, float]) -> Callable[[str, bytes, Any], Any]:
    async def on_alert(subject: str, data: bytes, headers: Any) -> None:
        got.setdefault(subject.rsplit(".", 1)[-1], time.monotonic())

    return on_alert


@pytest.mark.timeout(120)
async def test_two_elected_doctors_alert_once_and_a_kill9_of_both_is_taken_over(
    mesh: Mesh, workers: Callable[..., Worker]
):
    ids = [unique_id("p") for _ in range(5)]
    procs = {i: workers(i) for i in ids}
    for i in ids:
        await wait_state(mesh, i, "running")
    bucket = await open_doctors_bucket(mesh)
    holders = await eventually(lambda: _two_of(bucket, ids), timeout=15, what="two doctors elected")
    standby = [i for i in ids if i not in holders.values()]
    first_alert: dict[str, float] = {}
    await mesh.subscribe("nxs.alert.>", alert_clock(first_alert))

    # A standby node dies: an elected doctor alerts it within the timeout plus an interval.
    victim = standby.pop()
    t_kill = time.monotonic()
    procs[victim].signal(signal.SIGKILL)
    await eventually(lambda: victim in first_alert, timeout=15, what="the standby node's death alert")
    assert first_alert[victim] - t_kill <= DEAD_AFTER + HB + 0.75  # margin: a loaded 2-core runner

    # Both lease holders die at once (kill -9): the standby doctors take the slots over and alert both.
    t_kill = time.monotonic()
    for node in holders.values():
        procs[node].signal(signal.SIGKILL)
    await eventually(lambda: set(holders.values()) <= set(first_alert), timeout=30,
                     what="the dead doctors' own death alerts")
    new = await eventually(lambda: _two_of(bucket, standby), timeout=15, what="the survivors hold both slots")
    assert set(new.values()) == set(standby)
    await asyncio.sleep(3 * DEAD_AFTER)  # sleep-ok: waiting out every doctor to prove there is no second alert
    for node in [victim, *holders.values()]:
        dead = [a for a in await alerts_about(mesh, node) if a["event"] == "dead"]
        assert len(dead) == 1, (node, dead)
        # The standby victim was alerted by an elected doctor; the elected ones by those that took over.
        assert dead[0]["detected_by"] in (holders.values() if node == victim else standby), (node, dead)
    for node in standby:
        assert await alerts_about(mesh, node) == [], node
        assert procs[node].proc is not None and procs[node].proc.poll() is None


async def _two_of(bucket: Bucket, among: list[str]) -> dict[int, str] | None:
    held = await slot_holders(bucket)
    return held if len(held) == 2 and set(held.values()) <= set(among) and len(set(held.values())) == 2 else None


@pytest.mark.timeout(60)
async def test_one_writer_runs_the_death_hooks_once_and_merges_their_results(
    mesh_factory: Callable[..., Any], workers: Callable[..., Worker]
):
    victim = unique_id("v")
    proc = workers(victim, "--no-doctor")
    calls: list[str] = []

    async def who_owned(node: str) -> dict[str, Any]:
        calls.append(node)
        return {"agents_orphaned": ["a1"]}

    async def broken(node: str) -> dict[str, Any]:
        raise RuntimeError("hook down")

    events: list[dict[str, Any]] = []
    doctors = [await Doctor(await mesh_factory(instance_id=unique_id("doc")), dead_after=DEAD_AFTER, interval=HB,
                            redistribute=False, on_event=events.append, death_hooks=(who_owned, broken)).start()
               for _ in range(3)]
    try:
        mesh = doctors[0].mesh
        await wait_state(mesh, victim, "running")
        await eventually(lambda: all(victim in d.peers for d in doctors), what="every doctor hears the victim")
        proc.signal(signal.SIGKILL)
        await eventually(lambda: len(events) == 3, timeout=15, what="every doctor settles the death")
        await asyncio.sleep(2 * DEAD_AFTER)  # sleep-ok: proving no doctor runs the hooks a second time
    finally:
        for d in doctors:
            await d.stop()
    assert calls == [victim]
    assert sorted(e["duplicate"] for e in events) == [False, True, True]
    assert sum(d.alerts_published for d in doctors) == 1
    [alert] = await alerts_about(mesh, victim)
    assert alert["agents_orphaned"] == ["a1"] and alert["event"] == "dead"
    assert alert["hook_errors"] == ["test_one_writer_runs_the_death_hooks_once_and_merges_their_results.<locals>"
                                    ".broken: RuntimeError: hook down"]


@pytest.mark.timeout(60)
async def test_an_elected_writer_that_dies_before_publishing_is_replaced_and_the_alert_stored_once(
    mesh_factory: Callable[..., Any], workers: Callable[..., Worker]
):
    victim = unique_id("v")
    proc = workers(victim, "--no-doctor")
    events: list[dict[str, Any]] = []
    doctors = [await Doctor(await mesh_factory(instance_id=unique_id("doc")), dead_after=DEAD_AFTER, interval=HB,
                            redistribute=False, on_event=events.append).start() for _ in range(2)]
    try:
        mesh = doctors[0].mesh
        await wait_state(mesh, victim, "running")
        await eventually(lambda: all(victim in d.peers for d in doctors), what="both doctors hear the victim")
        proc.signal(signal.SIGKILL)
        # A writer elected for this death that dies before it publishes: its election is in the bucket
        # (for the victim's last beats, whichever the doctors find stored) and no alert ever comes from it.
        rec = await mesh.last("heartbeat", f"nxs.heartbeat.{victim}")
        assert rec is not None and rec.envelope is not None
        epoch, seq = rec.envelope.content["epoch"], rec.envelope.content["seq"]
        bucket = await open_doctors_bucket(mesh)
        for s in range(seq, seq + 5):
            assert await elect(bucket, alert_key("dead", victim, epoch, s), "ghost")
        await eventually(lambda: len(events) == 2, timeout=20, what="both doctors settle the death")
        await asyncio.sleep(2 * DEAD_AFTER)  # sleep-ok: proving no third write comes
    finally:
        for d in doctors:
            await d.stop()
    assert sorted(e["duplicate"] for e in events) == [False, True]
    [alert] = await alerts_about(mesh, victim)
    assert alert["event"] == "dead" and alert["detected_by"] in {d.mesh.config.instance_id for d in doctors}


@pytest.mark.timeout(60)
async def test_a_doctor_that_lost_its_lease_does_not_alert_and_alerts_once_it_holds_one_again(
    mesh: Mesh, mesh_factory: Callable[..., Any], workers: Callable[..., Worker]
):
    victim = unique_id("v")
    proc = workers(victim, "--no-doctor")
    await wait_state(mesh, victim, "running")
    events: list[dict[str, Any]] = []
    doc = await Doctor(await mesh_factory(instance_id=unique_id("doc")), dead_after=DEAD_AFTER, interval=HB,
                       redistribute=False, on_event=events.append, campaign=True, slots=1).start()
    bucket = await open_doctors_bucket(mesh)
    try:
        assert doc.active
        await eventually(lambda: victim in doc.peers, what="the doctor hears the victim")
        async with _squatter(bucket, "doctor.0"):  # another process takes the slot and keeps renewing it
            await eventually(lambda: not doc.active, timeout=5, what="the doctor stands by")
            proc.signal(signal.SIGKILL)
            await asyncio.sleep(3 * DEAD_AFTER)  # sleep-ok: long past the timeout, to prove no alert comes
            assert events == [] and await alerts_about(mesh, victim) == []
        # The squatter went silent: its slot expires, the doctor takes it over and catches the death up.
        await eventually(lambda: doc.active, timeout=10, what="the doctor takes the slot over")
        await eventually(lambda: events, timeout=10, what="the victim's death alert")
    finally:
        await doc.stop()
    assert [(e["event"], e["node"], e["duplicate"]) for e in events] == [("dead", victim, False)]


@contextlib.asynccontextmanager
async def _squatter(bucket: Bucket, key: str) -> AsyncIterator[None]:
    value = json.dumps({"holder": "squatter", "node": "squatter"}).encode()

    async def steal() -> int | None:  # a CAS from the revision just read: the holder may renew in between
        entry = await bucket.get(key)
        return None if entry is None else await bucket.update(key, value, last=entry.revision)

    rev = await eventually(steal, what=f"{key} taken over")

    async def renew() -> None:
        nonlocal rev
        while True:
            await asyncio.sleep(HB)  # sleep-ok: the squatter's renewal clock
            rev = await bucket.update(key, value, last=rev or 0)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


IDLE_WINDOW = 5.0  # seconds of idle traffic counted (default timings: 1 s heartbeat, 5 s timeout)
BUDGET = 1024  # bytes/s per node, the seed's budget


@pytest.mark.timeout(90)
async def test_embedded_nodes_share_one_campaigner_and_standby_nodes_stay_in_the_traffic_budget(
    nats_server: NatsServer, mesh: Mesh, tmp_path: Path
):
    nodes = [Node(MeshConfig(servers=(nats_server.url,), instance_id=unique_id("e"), data_dir=str(tmp_path)),
                  NodeOptions(outbox=False)) for _ in range(8)]
    await asyncio.gather(*(n.start() for n in nodes))
    try:
        bucket = await open_doctors_bucket(mesh)
        active = [n for n in nodes if n.doctor is not None and n.doctor.active]
        assert len(active) == 1  # one campaigner for the process: one slot, one active doctor
        assert await slot_holders(bucket) == {0: active[0].node_id}
        await eventually(lambda: len(active[0].doctor.peers) == 7 if active[0].doctor else False, timeout=10,
                         what="the active doctor hears the other nodes")

        before = {n.node_id: await node_connections(nats_server.monitor_url, n.node_id) for n in nodes}
        t0 = time.monotonic()
        await asyncio.sleep(IDLE_WINDOW)  # sleep-ok: the measurement window itself
        window = time.monotonic() - t0
        for n in nodes:
            after = await node_connections(nats_server.monitor_url, n.node_id)
            start = {c["cid"]: c for c in before[n.node_id]}
            used = sum(c["in_bytes"] + c["out_bytes"] - start.get(c["cid"], {}).get("in_bytes", 0)
                       - start.get(c["cid"], {}).get("out_bytes", 0) for c in after)
            if n is not active[0]:
                assert used / window <= BUDGET, (n.node_id, used / window)

        # Views work from anywhere: a client that is no doctor reads every node from the streams.
        views = {v.node: v.state for v in await list_nodes(mesh)}
        assert all(views[n.node_id] == "running" for n in nodes)

        # The active node stops cleanly: another doctor of the process takes over, still one slot.
        await active[0].stop()
        rest = [n for n in nodes if n is not active[0]]
        await eventually(lambda: sum(bool(n.doctor and n.doctor.active) for n in rest) == 1, timeout=10,
                         what="another embedded doctor becomes active")
        holder = next(n for n in rest if n.doctor and n.doctor.active)
        await eventually(lambda: _held_by(bucket, holder.node_id), timeout=10, what="the slot shows the new doctor")
        assert await alerts_about(mesh, active[0].node_id) == []
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
    assert await slot_holders(bucket) == {}  # the last one out released the slot


async def _held_by(bucket: Bucket, node: str) -> bool:
    return await slot_holders(bucket) == {0: node}


@pytest.mark.timeout(60)
async def test_a_nodes_death_hooks_run_in_its_doctor_and_bad_slot_counts_are_config_errors(
    nats_server: NatsServer, mesh: Mesh, workers: Callable[..., Worker], tmp_path: Path
):
    with pytest.raises(ConfigError, match="doctor_slots"):
        NodeOptions(doctor_slots=0)
    victim = unique_id("v")
    proc = workers(victim, "--no-doctor")
    node = Node(MeshConfig(servers=(nats_server.url,), instance_id=unique_id("h"), data_dir=str(tmp_path)),
                NodeOptions(heartbeat_interval=HB, dead_after=DEAD_AFTER, outbox=False))

    async def hook(dead: str) -> dict[str, Any]:
        return {"handed_off": dead}

    node.death_hooks.append(hook)
    async with node:
        await wait_state(mesh, victim, "running")
        await eventually(lambda: node.doctor is not None and victim in node.doctor.peers, what="the node hears it")
        proc.signal(signal.SIGKILL)
        alert = await eventually(lambda: alerts_about(mesh, victim), timeout=15, what="the death alert")
    assert alert[0]["handed_off"] == victim and alert[0]["detected_by"] == node.node_id
