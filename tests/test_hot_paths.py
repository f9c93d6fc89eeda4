"""The per-message shortcuts of the publish and consume paths keep their meaning (issue 14 item 4):
random ids are RFC 4122 v4, a batch's dedup header is its envelope's id, a long handler is kept
alive however the sweeper was left, and a consumer stopped with a prefetched batch loses nothing."""

import asyncio
import uuid

import pytest

from nxs_mesh import Mesh
from nxs_mesh.testing import eventually
from nxs_mesh.wire.contract import MSG_ID_HEADER, TTL_HEADER
from nxs_mesh.wire.envelope import Source, encode, new_envelope
from nxs_mesh.wire.ids import random_uuid


def test_random_ids_are_canonical_v4_and_unique():
    ids = [random_uuid() for _ in range(5_000)]  # several pools of 256
    assert len(set(ids)) == len(ids)
    for u in ids:
        assert isinstance(u, uuid.UUID) and u.version == 4 and u.variant == uuid.RFC_4122
        assert uuid.UUID(str(u)) == u and hash(uuid.UUID(str(u))) == hash(u) and str(u) == str(u).lower()
    env = new_envelope("CHAT", "x", source=Source("hot-node", "main"))
    assert env.message_id.version == 4 and f'"message_id":"{env.id}"'.encode() in encode(env)


async def test_batch_dedup_headers_are_the_envelope_ids(mesh: Mesh):
    """publish_many takes the id's text from the encoded bytes (JSON); msgpack and ttl take the
    general path. Either way the stored Nats-Msg-Id is the envelope's message_id."""
    plain = [new_envelope("CHAT", i, source=mesh.source, to="hot-peer") for i in range(5)]
    packed = [new_envelope("CHAT", i, source=mesh.source, to="hot-packed") for i in range(3)]
    timed = [new_envelope("SYNC", i, source=mesh.source, to="hot-sync", ttl=60) for i in range(3)]
    await mesh.publish_many(plain)
    await mesh.publish_many(packed, msgpack=True)
    await mesh.publish_many(timed)
    for kind, to, sent in (("chat", "hot-peer", plain), ("chat", "hot-packed", packed), ("sync", "hot-sync", timed)):
        recs = [r async for r in mesh.tail(kind, instance=to)]
        assert [r.headers[MSG_ID_HEADER] for r in recs] == [e.id for e in sent]
        assert [r.envelope.id for r in recs] == [e.id for e in sent]
        if kind == "sync":
            assert all(r.headers[TTL_HEADER] == "60s" for r in recs)


async def test_a_long_handler_after_a_quick_one_is_kept_alive(mesh: Mesh):
    """The keepalive sweeper armed by a quick handler lapses; the long one after it still gets its
    in-progress acks before the ack wait ends (no redelivery)."""
    calls: list[tuple[str, int]] = []

    async def handler(env, delivery):
        calls.append((env.content, delivery.deliveries))
        if env.content == "long":
            await asyncio.sleep(2.5)  # sleep-ok: the work must outlast ack_wait (1 s) more than twice

    consumer = await mesh.consume("chat", handler, ack_wait=1.0)
    me = mesh.config.instance_id
    await mesh.publish("CHAT", "quick", to=me)
    await eventually(lambda: consumer.stats.acked == 1, timeout=15)
    await mesh.publish("CHAT", "long", to=me)
    await eventually(lambda: consumer.stats.acked == 2, timeout=15)
    await mesh.publish("CHAT", "last", to=me)  # flushes anything redelivered meanwhile
    await eventually(lambda: consumer.stats.acked == 3, timeout=15)
    assert calls == [("quick", 1), ("long", 1), ("last", 1)] and consumer.stats.duplicates == 0


@pytest.mark.parametrize(("n", "batch", "stop_after"), [(200, 10, 25), (1000, 20, 150)])
async def test_stop_with_a_prefetched_batch_loses_nothing(mesh: Mesh, n: int, batch: int, stop_after: int):
    """The next pull requests go out while a batch is handled (with a backlog they are kept
    overlapping): a consumer stopped then, early or in the middle of a stream, leaves what it had
    asked for to the next one at once (not after the 30 s ack wait), and nothing runs twice."""
    me = mesh.config.instance_id
    await mesh.publish_many(new_envelope("CHAT", i, source=mesh.source, to=me) for i in range(n))
    first: list[int] = []
    enough = asyncio.Event()

    async def slow_start(env):
        first.append(env.content)
        if len(first) >= stop_after:
            enough.set()
        await asyncio.sleep(0)  # sleep-ok: a bare yield (0 s), so the prefetched request's deliveries arrive meanwhile

    consumer = await mesh.consume("chat", slow_start, durable="hot-prefetch", batch=batch, ack_wait=30.0)
    await asyncio.wait_for(enough.wait(), 15)
    await consumer.stop()
    handled_first = first[:consumer.stats.acked]
    rest: list[int] = []

    async def collect(env):
        rest.append(env.content)

    second = await mesh.consume("chat", collect, durable="hot-prefetch", batch=batch, ack_wait=30.0)
    await eventually(lambda: len(handled_first) + len(rest) >= n, timeout=10,
                     what="every message handled by one of the two consumers well within the ack wait")
    assert sorted(handled_first + rest) == list(range(n)), "each message handled once, by one of the two"
    await second.stop()
