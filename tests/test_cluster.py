"""Failover on a real three-server cluster (loopback): SIGKILL under load loses nothing acknowledged,
consumers resume by themselves, clients leave a server that has no JetStream."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import pytest

from nxs_mesh import Envelope, Mesh, MeshConfig
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import LocalCluster, NatsServer


def _rotated(urls: list[str], i: int) -> tuple[str, ...]:
    """Client i's server list: its "local" server first, the others next."""
    return tuple(urls[i:] + urls[:i])


async def _stream_ids(mesh: Mesh, to: str) -> collections.Counter[str]:
    return collections.Counter([rec.envelope.id async for rec in mesh.tail("chat", instance=to)])


async def test_streams_are_r3_on_a_three_server_cluster(nats_cluster: LocalCluster) -> None:
    async with Mesh(MeshConfig(servers=tuple(nats_cluster.urls), instance_id=unique_id("n"))) as mesh:
        assert mesh.cluster_size() == 3
        info = await mesh.admin.stream("NXS_CHAT")
        assert info.replicas == 3
        assert info.leader is not None and len(info.replicas_current) == 2


@pytest.mark.timeout(120)
async def test_sigkill_under_load_loses_no_acknowledged_message(nats_cluster: LocalCluster, tmp_path: Path) -> None:
    """A small Jepsen-style queue check. Three publishers (one "local" to each server, with an outbox)
    send paced messages; the stream leader's server is SIGKILLed once 450 are acknowledged, restarted
    once the survivors have stored 150 more directly, and publishing stops 150 direct stores after it is
    healthy again (at most 3000 messages). Every acknowledged message (stored, or queued and drained) is
    in the stream exactly once, and a durable consumer running throughout handles each exactly once."""
    publishers, cap = 3, 3000
    to = unique_id("jepsen")
    urls = nats_cluster.urls
    base = MeshConfig(servers=tuple(urls), instance_id=unique_id("pub"), replicas=3)

    received: collections.Counter[str] = collections.Counter()

    async def handler(env: Envelope) -> None:
        received[env.id] += 1

    consumer_mesh = await Mesh(base.replace(instance_id=to)).connect()
    pubs = [
        await Mesh(base.replace(servers=_rotated(urls, i), instance_id=f"{base.instance_id}-{i}"),
                   outbox=tmp_path / f"outbox-{i}.sqlite").connect()
        for i in range(publishers)
    ]
    stop = asyncio.Event()
    try:
        consumer = await consumer_mesh.consume("chat", handler, durable=f"jepsen-{to}", batch=128)
        leader = (await pubs[0].admin.stream("NXS_CHAT")).leader  # type: ignore[union-attr]
        victim = next(s for s in nats_cluster.servers if s.name == leader)

        stored: list[str] = []
        queued: list[str] = []
        failed: list[str] = []
        direct = {"after_kill": 0, "after_restart": 0}
        phase = "before"
        killed_at = 0.0
        first_direct_after_kill: dict[int, float] = {}

        async def publish(k: int, mesh: Mesh) -> None:
            mesh.publish_timeout = 2.0
            i = 0
            while not stop.is_set() and i < cap // publishers:
                await asyncio.sleep(0.02)  # sleep-ok: pacing the load generator so the faults land mid-run
                i += 1
                try:
                    r = await mesh.publish("CHAT", {"k": k, "i": i}, to=to)
                except Exception as exc:  # not acknowledged: may or may not be stored, never twice
                    failed.append(repr(exc))
                    continue
                (queued if r.queued else stored).append(r.message_id)
                if phase != "before" and not r.queued:
                    direct[phase] += 1
                    first_direct_after_kill.setdefault(k, time.monotonic() - killed_at)

        tasks = [asyncio.create_task(publish(k, m)) for k, m in enumerate(pubs)]
        await eventually(lambda: len(stored) + len(queued) >= 450, timeout=30, what="450 acknowledged")
        victim.kill()
        killed_at, phase = time.monotonic(), "after_kill"
        await eventually(lambda: direct["after_kill"] >= 150, timeout=40, what="the majority stores again")
        failover_s = time.monotonic() - killed_at
        await asyncio.to_thread(victim.start)
        restarted_at = time.monotonic()
        await asyncio.to_thread(victim.wait_healthy, 30)
        healthy_s = time.monotonic() - restarted_at
        phase = "after_restart"
        await eventually(lambda: direct["after_restart"] >= 150, timeout=30, what="stores after the restart")
        stop.set()
        await asyncio.gather(*tasks)
        drain_started = time.monotonic()
        for m in pubs:
            assert m.flusher is not None and await m.flusher.wait_empty(timeout=30), m.flusher and m.flusher.last_error
        drain_s = time.monotonic() - drain_started
        drains = [m.flusher.last_drain_s for m in pubs if m.flusher]

        acknowledged = stored + queued
        assert len(set(acknowledged)) == len(acknowledged)
        found = await _stream_ids(consumer_mesh, to)
        missing = [m for m in acknowledged if found[m] == 0]
        dupes = {m: c for m, c in found.items() if c > 1}
        assert not missing, f"{len(missing)} acknowledged messages missing"
        assert not dupes, f"duplicates in the stream: {dupes}"
        assert len(found) - len(acknowledged) <= len(failed), "the stream holds ids nobody published"

        await eventually(lambda: set(acknowledged) <= set(received), timeout=30, what="consumer got everything")
        assert all(c == 1 for c in received.values()), "a handler saw a message twice"
        print(
            f"\nJEPSEN sigkill of stream leader {leader}: acknowledged {len(acknowledged)} "
            f"(stored {len(stored)}, queued {len(queued)}), not acknowledged {len(failed)}; "
            f"found in stream {sum(found.values())} ({len(found)} distinct, {len(dupes)} duplicated, "
            f"{len(missing)} missing); consumer handled {len(received)} distinct, "
            f"{sum(received.values()) - len(received)} twice, {consumer.stats.duplicates} redeliveries deduped; "
            f"first direct ack after kill per publisher {[round(first_direct_after_kill.get(k, -1), 2) for k in range(publishers)]}s; "
            f"150 direct stores after kill within {failover_s:.2f}s; restarted server healthy in {healthy_s:.2f}s; "
            f"final outbox drain {drain_s:.2f}s (last drain per publisher {drains}s)"
        )
    finally:
        stop.set()
        for m in pubs:
            await m.close()
        await consumer_mesh.close()


async def test_consumer_resumes_after_server_restart(nats_server: NatsServer) -> None:
    """The nats-py trap: a pull consumer must not go silent after its server restarts (SIGKILL)."""
    to = unique_id("dst")
    got: list[Any] = []

    async def handler(env: Envelope) -> None:
        got.append(env.payload.content)

    cfg = MeshConfig(servers=(nats_server.url,), instance_id=to)
    async with Mesh(cfg) as mesh:
        await mesh.consume("chat", handler, durable=f"resume-{to}")
        for i in range(5):
            await mesh.publish("CHAT", i, to=to)
        await eventually(lambda: len(got) == 5, what="before restart")
        nats_server.kill()
        await eventually(lambda: mesh.server_path == "disconnected")
        await asyncio.to_thread(nats_server.start)
        await eventually(lambda: mesh.server_path == "local", timeout=20, what="reconnected")
        for i in range(5, 10):
            await mesh.publish("CHAT", i, to=to)
        await eventually(lambda: sorted(got) == list(range(10)), timeout=20, what=f"after restart, got {got}")


async def test_client_leaves_a_server_without_jetstream(nats_cluster: LocalCluster, tmp_path: Path) -> None:
    """A reachable server answering "JetStream unavailable" (here: one outside the cluster, as an isolated
    local server would) is left for the next member after a few answers; what was queued meanwhile drains."""
    to = unique_id("dst")
    async with Mesh(MeshConfig(servers=tuple(nats_cluster.urls), instance_id=to)):
        pass  # streams exist
    with NatsServer(jetstream=False, name="isolated") as lonely:
        cfg = MeshConfig(servers=(lonely.url, *nats_cluster.urls), instance_id=unique_id("n"))
        async with Mesh(cfg, ensure=False, outbox=tmp_path / "o.sqlite") as mesh:
            assert mesh.server_path == "local"
            results = [await mesh.publish("CHAT", i, to=to) for i in range(5)]
            assert results[0].queued
            await eventually(lambda: mesh.server_path == "peer", timeout=20, what="moved to a cluster member")
            assert mesh.flusher is not None and await mesh.flusher.wait_empty(timeout=20)
            ids = [rec.envelope.id async for rec in mesh.tail("chat", instance=to)]
            assert ids == [r.message_id for r in results]
