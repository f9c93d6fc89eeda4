"""Exactly-once handling in a consumer group (issue 10, item 3): members of one durable consumer share
a processed-id record, so a redelivery or a second copy never reaches a second handler."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

import pytest

from nxs_mesh import Envelope, Mesh, MeshConfig
from nxs_mesh.client.exactly_once import OnceGuard, Verdict, open_guard
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.pull import Meta
from nxs_mesh.transport.server import LocalCluster
from nxs_mesh.wire.envelope import encode, new_envelope

MeshFactory = Callable[..., Awaitable[Mesh]]


def _meta(seq: int, delivered: int) -> Meta:
    return Meta("NXS_CHAT", seq, delivered, time.time_ns(), 0)


async def test_guard_rules_claim_done_stale_and_takeover(mesh: Mesh):
    """The decisions, member by member, against the real bucket."""
    group = unique_id("g")
    a, b = await open_guard(mesh.admin, group), await open_guard(mesh.admin, group)
    mid = unique_id("m")
    verdict, token = await a.begin(mid, _meta(7, 1))
    assert verdict is Verdict.RUN and token
    assert (await a.begin(mid, _meta(7, 1)))[0] is Verdict.RUN  # our own claim (a retried create)
    assert (await b.begin(mid, _meta(7, 1)))[0] is Verdict.LEAVE  # the same delivery held by a: not ours
    assert (await b.begin(mid, _meta(9, 1)))[0] is Verdict.WAIT  # another stored copy of the id: later
    taken = await b.begin(mid, _meta(7, 2))  # JetStream redelivered: a's delivery is over, b takes it
    assert taken[0] is Verdict.RUN
    assert (await a.begin(mid, _meta(7, 1)))[0] is Verdict.LEAVE  # a holds an older delivery now
    assert not await a.finish(mid, token)  # fenced: a's completion is not recorded
    assert await b.finish(mid, taken[1])
    assert (await a.begin(mid, _meta(7, 3)))[0] is Verdict.DONE
    assert (await OnceGuard(a.bucket, unique_id("other")).begin(mid, _meta(7, 1)))[0] is Verdict.RUN  # per group


async def _store_copies(mesh: Mesh, envs: list[Envelope]) -> None:
    """Store each envelope as a second stream message (another Nats-Msg-Id: past the stream's dedup)."""
    for env in envs:
        await mesh.link.js.publish(f"nxs.chat.{env.target.instance_id}._all", encode(env),
                                   headers={"Nats-Msg-Id": f"copy-{env.id}"})


async def test_a_second_copy_reaching_another_member_is_not_handled_again(mesh_factory: MeshFactory):
    """Member a handles every message; member b, a new instance of the same durable consumer with a
    memory of its own, then gets second copies of the same ids: it acks them without a handler call."""
    to = unique_id("grp")
    durable = f"once-{to}"
    pub = await mesh_factory(instance_id=unique_id("pub"))
    calls: collections.Counter[str] = collections.Counter()

    async def handler(env: Envelope) -> None:
        calls[env.id] += 1

    envs = [new_envelope("CHAT", i, source=pub.source, to=to) for i in range(20)]
    a = await mesh_factory(instance_id=to)
    first = await a.consume("chat", handler, durable=durable, exactly_once=True)
    for env in envs:
        await pub.send(env)
    await eventually(lambda: len(calls) == len(envs), what="member a handled all")
    await first.stop()

    b = await mesh_factory(instance_id=to)
    second = await b.consume("chat", handler, durable=durable, exactly_once=True)
    await _store_copies(pub, envs)
    await eventually(lambda: second.stats.acked + second.stats.duplicates == len(envs), what="b settled the copies")
    assert all(c == 1 for c in calls.values()), f"{sum(c > 1 for c in calls.values())} handled twice"
    assert second.stats.group_duplicates == len(envs)
    assert await second.queue_depth() == 0


async def test_failed_attempt_does_not_block_the_retry(mesh_factory: MeshFactory):
    """A handler that failed left its claim behind; the redelivery (a higher delivery count) takes it."""
    to = unique_id("grp")
    pub = await mesh_factory(instance_id=unique_id("pub"))
    attempts: list[int] = []

    async def flaky(env: Envelope) -> None:
        attempts.append(env.content)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    members = [await mesh_factory(instance_id=to) for _ in range(2)]
    consumers = [await m.consume("chat", flaky, durable=f"once-{to}", exactly_once=True, backoff_base=0.05)
                 for m in members]
    await pub.publish("CHAT", 1, to=to)
    await eventually(lambda: sum(c.stats.acked for c in consumers) == 1, what="handled after the retry")
    assert attempts == [1, 1]


def _rotated(urls: list[str], i: int) -> tuple[str, ...]:
    return tuple(urls[i:] + urls[:i])


@pytest.mark.timeout(90)
async def test_two_members_under_leader_kill_handle_each_message_once(nats_cluster: LocalCluster):
    """Two members of one durable consumer, each connected to its own server, under load; the server
    that leads the consumer is SIGKILLed mid-run (acks it had not replicated are lost, so JetStream
    redelivers messages that were handled) and restarted. Once nothing is left unacknowledged, every
    message was handled, each exactly once."""
    # The ack wait outlasts a leader election (the guarantee's condition) and is short enough that the
    # redeliveries of handled messages whose acks died with the leader come within the test.
    n, ack_wait = 12_000, 10.0
    to = unique_id("once")
    durable = f"once-{to}"
    urls = nats_cluster.urls
    base = MeshConfig(servers=tuple(urls), instance_id=to, replicas=3)
    calls: collections.Counter[str] = collections.Counter()

    async def handler(env: Envelope) -> None:
        calls[env.id] += 1

    pub = await Mesh(base.replace(instance_id=unique_id("pub"))).connect()
    members = [await Mesh(base.replace(servers=_rotated(urls, i + 1))).connect() for i in range(2)]
    try:
        consumers = [await m.consume("chat", handler, durable=durable, exactly_once=True, batch=64,
                                     concurrency=16, fetch_timeout=1.0, ack_wait=ack_wait) for m in members]
        stream_leader = (await pub.admin.stream("NXS_CHAT")).leader  # type: ignore[union-attr]
        info = await pub.link.js.consumer_info("NXS_CHAT", durable)
        leader = info.cluster.leader if info.cluster else stream_leader
        bucket = await pub.admin.stream("KV_NXS_ONCE")
        bucket_leader = bucket.leader if bucket is not None else "-"
        victim = next(s for s in nats_cluster.servers if s.name == leader)
        ids: list[str] = []

        async def publish() -> None:
            pub.publish_timeout = 10.0
            for k in range(0, n, 500):
                envs = [new_envelope("CHAT", i, source=pub.source, to=to) for i in range(k, k + 500)]
                for attempt in range(20):
                    try:
                        await pub.publish_many(envs)  # a retry is harmless: each message_id is its dedup key
                        break
                    except Exception:  # noqa: BLE001 - a leader election: send the same envelopes again
                        if attempt == 19:
                            raise
                        await asyncio.sleep(0.5)  # sleep-ok: backoff between publish retries
                ids.extend(e.id for e in envs)

        started = time.monotonic()
        sender = asyncio.create_task(publish())
        await eventually(lambda: len(calls) >= n // 3, timeout=40, what="a third handled")
        victim.kill()
        killed_at, handled_at_kill = time.monotonic(), len(calls)
        await eventually(lambda: len(calls) >= handled_at_kill + n // 6, timeout=40, what="handled after the kill")
        resumed_s = time.monotonic() - killed_at
        await asyncio.to_thread(victim.start)
        await asyncio.to_thread(victim.wait_healthy, 30)
        await sender

        async def settled() -> bool:
            report = await pub.admin.consumer("NXS_CHAT", durable)
            return set(ids) <= set(calls) and report is not None and report.backlog == 0

        await eventually(settled, timeout=40, what="every message handled and acknowledged")
        elapsed = time.monotonic() - started
        twice = {m: c for m, c in calls.items() if c > 1}
        stats = [c.stats for c in consumers]
        print(
            f"\nEXACTLY-ONCE sigkill of consumer leader {leader} (stream leader {stream_leader}, bucket leader "
            f"{bucket_leader}), 2 members: "
            f"published {len(ids)}, handled {len(calls)} distinct, {sum(calls.values()) - len(calls)} handler "
            f"calls twice; per member handled {[s.handled for s in stats]}, redeliveries of handled messages "
            f"acked unhandled {[s.duplicates for s in stats]} (of them caught only by the group record "
            f"{[s.group_duplicates for s in stats]}), left to the other member {[s.deferred for s in stats]}; "
            f"{handled_at_kill} handled at the kill, {n // 6} more within {resumed_s:.2f}s; "
            f"all settled in {elapsed:.2f}s"
        )
        assert not twice, f"{len(twice)} ids handled twice, e.g. {sorted(twice)[:3]}"
        assert set(calls) == set(ids)
    finally:
        await pub.close()
        for m in members:
            await m.close()



async def test_two_task_workers_run_a_task_stored_twice_once(mesh: Mesh, mesh_config: MeshConfig):
    """Exactly once is on by default for a node's task consumers: two workers (10 slots each), every
    task stored twice, both copies delivered while the first handler still runs; one handler call each."""
    from nxs_mesh.node.node import Node, NodeOptions
    from nxs_mesh.wire import subjects
    from nxs_mesh.wire.contract import TASK_TTL

    cap = unique_id("twice")
    release = asyncio.Event()
    calls: collections.Counter[int] = collections.Counter()
    options = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False,
                          capabilities=(cap,), task_concurrency=10, task_ack_wait=2.0)
    nodes = [Node(mesh_config.replace(instance_id=unique_id("worker")), options) for _ in range(2)]
    for node in nodes:
        @node.task(cap)
        async def work(payload: int) -> int:
            calls[payload] += 1
            await release.wait()
            return payload

    for node in nodes:
        await node.start()
    try:
        envs = []
        for i in range(5):
            tid = unique_id("t")
            envs.append(new_envelope("TASK", i, source=mesh.source, ttl=TASK_TTL, metadata={"capability": cap},
                                     correlation_id=tid, reply_to=subjects.result(tid)))
        for env in envs:
            await mesh.send(env)
            await mesh.link.js.publish(subjects.for_envelope(env), encode(env), headers={"Nats-Msg-Id": f"copy-{env.id}"})

        async def all_delivered() -> bool:
            report = await mesh.admin.consumer("NXS_TASK", f"task-{cap}")
            return report is not None and report.pending == 0

        await eventually(all_delivered, timeout=10, what="both copies of every task delivered")
        release.set()

        async def queue_empty() -> bool:
            report = await mesh.admin.stream("NXS_TASK")
            return report is not None and report.messages == 0

        await eventually(queue_empty, timeout=20, what="every copy acknowledged")
        assert calls == {i: 1 for i in range(5)}, calls
    finally:
        for node in nodes:
            await node.stop()
