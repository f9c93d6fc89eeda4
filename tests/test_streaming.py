"""The default consume path streams: pull requests kept overlapping while there is a backlog
(``transport.pull.PullSession``), deliveries handed from the connection's reader straight to the
session (``transport.inbox``), acks joined to the flush already due. Every semantic of the pull
consumer holds on it; each test here runs against a real nats-server (a stop in the middle of a
stream: ``test_hot_paths.test_stop_with_a_prefetched_batch_loses_nothing``)."""

import asyncio

import nats
import pytest

from nxs_mesh import Abandon, Mesh
from nxs_mesh.client.dlq import list_dead_letters
from nxs_mesh.testing import eventually
from nxs_mesh.transport.inbox import Inbound, direct_subscribe, is_direct, unsubscribe
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import new_envelope


async def backlog(mesh: Mesh, to: str, n: int) -> None:
    await mesh.publish_many(new_envelope("CHAT", i, source=mesh.source, to=to) for i in range(n))


async def ack_pending(url: str, durable: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().consumer_info("NXS_CHAT", durable)).num_ack_pending
    finally:
        await nc.close()


async def test_direct_subscription_is_active_on_this_nats_py(nats_server):
    """The routed hand-over is in use (not its slower fallback): headers parsed only when asked for, as
    nats-py parses them; other subscriptions of the connection unchanged; unsubscribe and drain work."""
    nc = await nats.connect(nats_server.url)
    got: list[Inbound] = []
    plain: list[bytes] = []
    try:
        sub = await direct_subscribe(nc, "direct.test", got.append)
        assert is_direct(sub)

        async def on_plain(msg):
            plain.append(msg.data)

        await nc.subscribe("direct.plain", cb=on_plain)
        await nc.publish("direct.test", b"0")
        await nc.publish("direct.test", b"1", headers={"Nats-Msg-Id": "m1", "Nxs-Encoding": "json"})
        await nc.publish("direct.plain", b"plain")
        await eventually(lambda: len(got) == 2 and plain == [b"plain"])
        assert [m.data for m in got] == [b"0", b"1"] and got[0].headers is None
        assert got[1].has_header("Nxs-Encoding") and not got[1].has_header("Nxs-Sealed")
        assert got[1].headers == {"Nats-Msg-Id": "m1", "Nxs-Encoding": "json"}
        await unsubscribe(sub)
        assert not is_direct(sub)
        await nc.publish("direct.test", b"after unsubscribe")
        await nc.publish("direct.plain", b"plain again")
        await eventually(lambda: plain == [b"plain", b"plain again"])
        assert len(got) == 2
    finally:
        await nc.drain()


async def test_a_backlog_is_prefetched_within_its_bound(mesh: Mesh, nats_server):
    """While one handler runs, more than a batch is already on its way (the next requests went out),
    but never more than the batches asked for ahead; afterwards every message is handled once, in order."""
    me, n, batch = mesh.config.instance_id, 300, 10
    await backlog(mesh, me, n)
    release = asyncio.Event()
    got: list[int] = []

    async def handler(env):
        if not release.is_set():
            await release.wait()
        got.append(env.content)

    consumer = await mesh.consume("chat", handler, durable="stream-bound", batch=batch)
    pending = [0]

    async def prefetched() -> bool:
        pending[0] = await ack_pending(nats_server.url, "stream-bound")
        return pending[0] > batch

    await eventually(prefetched, timeout=10, what="more than one batch delivered ahead of the handler")
    assert pending[0] <= 4 * batch, f"{pending[0]} delivered and unacknowledged; at most 4 batches are asked for"
    release.set()
    await eventually(lambda: len(got) == n, timeout=20)
    assert got == list(range(n)) and consumer.stats.duplicates == 0
    await consumer.stop()


async def test_workers_on_one_durable_share_a_stream_of_work(mesh_factory):
    """Queue-group style: two consumers of one durable split a backlog; each message is handled once."""
    a, b = await mesh_factory(instance_id="share-a"), await mesh_factory(instance_id="share-b")
    to, n = "share-dst", 600
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def handler_for(name: str):
        async def handler(env):
            seen[name].append(env.content)
            await asyncio.sleep(0)  # sleep-ok: a bare yield, so both workers' deliveries interleave
        return handler

    filters = [subjects.chat(to)]
    ca = await a.consume("chat", handler_for("a"), durable="share", filters=filters, batch=10)
    cb = await b.consume("chat", handler_for("b"), durable="share", filters=filters, batch=10)
    await backlog(a, to, n)
    await eventually(lambda: len(seen["a"]) + len(seen["b"]) >= n, timeout=30)
    assert sorted(seen["a"] + seen["b"]) == list(range(n)), "each message exactly once across the workers"
    assert seen["a"] and seen["b"], {k: len(v) for k, v in seen.items()}
    await ca.stop()
    await cb.stop()


async def test_an_unsettled_delivery_comes_back_after_ack_wait(mesh: Mesh):
    """Neither ack nor nak (the handler abandons it): JetStream redelivers after the ack wait."""
    me = mesh.config.instance_id
    calls: list[str] = []

    async def handler(env):
        calls.append(env.content)
        if len(calls) == 1:
            raise Abandon("left for the ack wait")

    consumer = await mesh.consume("chat", handler, durable="stream-ackwait", ack_wait=1.0)
    await mesh.publish("CHAT", "once more", to=me)
    await eventually(lambda: consumer.stats.acked == 1, timeout=15, what="redelivered after ack_wait and acked")
    assert calls == ["once more", "once more"]


async def test_concurrency_limit_holds_while_streaming(mesh: Mesh):
    me, n, limit = mesh.config.instance_id, 120, 3
    await backlog(mesh, me, n)
    running, peak, done = [0], [0], []

    async def handler(env):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.005)  # sleep-ok: simulated work, so that handlers overlap
        running[0] -= 1
        done.append(env.content)

    consumer = await mesh.consume("chat", handler, durable="stream-conc", batch=16, concurrency=limit)
    await eventually(lambda: len(done) == n, timeout=30)
    assert peak[0] == limit and sorted(done) == list(range(n))
    await consumer.stop()


async def test_a_deleted_consumer_is_declared_again_and_the_stream_goes_on(mesh: Mesh, nats_server):
    me = mesh.config.instance_id
    got: list[int] = []

    async def handler(env):
        got.append(env.content)

    consumer = await mesh.consume("chat", handler, durable="stream-deleted", batch=8)
    await backlog(mesh, me, 40)
    await eventually(lambda: len(got) == 40, timeout=15)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().delete_consumer("NXS_CHAT", "stream-deleted")
    finally:
        await nc.close()
    await mesh.publish_many(new_envelope("CHAT", 40 + i, source=mesh.source, to=me) for i in range(40))
    # The new consumer starts from the beginning: the first 40 come again and are acked as duplicates.
    await eventually(lambda: len(got) == 80 and consumer.stats.duplicates == 40, timeout=30,
                     what=f"re-declared and consuming again (handled {len(got)}, {consumer.stats.last_error!r})")
    assert got == list(range(80))
    await consumer.stop()


@pytest.mark.parametrize("garbage_every", [7])
async def test_garbage_amid_a_stream_is_dead_lettered_while_the_rest_is_handled(mesh: Mesh, nats_server,
                                                                              garbage_every: int):
    me, n = mesh.config.instance_id, 140
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    subject = subjects.chat(me)
    bad = 0
    try:
        for i in range(n):
            if i % garbage_every == 0:
                await js.publish(subject, b"not an envelope %d" % i)
                bad += 1
            else:
                await mesh.publish("CHAT", i, to=me)
    finally:
        await nc.close()
    got: list[int] = []

    async def handler(env):
        got.append(env.content)

    consumer = await mesh.consume("chat", handler, durable="stream-garbage", batch=16)
    await eventually(lambda: len(got) == n - bad and consumer.stats.dead_lettered == bad, timeout=20)
    assert got == [i for i in range(n) if i % garbage_every]
    dead = [d async for d in list_dead_letters(mesh)]
    assert len(dead) == bad and all(d.reason.startswith("invalid envelope: not valid JSON") for d in dead)
    await consumer.stop()
