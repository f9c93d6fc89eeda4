"""Enforced delivery semantics against a real nats-server: dedup, ack/redelivery, dead letters,
replay, ttl, priority, addressing, malformed input."""

import asyncio
import json
import uuid
from datetime import UTC, datetime

import nats
import pytest

from nxs_mesh import Mesh, Reject, Retry
from nxs_mesh.client.dlq import list_dead_letters, replay_dead_letter
from nxs_mesh.testing import eventually
from nxs_mesh.wire.envelope import encode, new_envelope


async def dead_letters(mesh):
    return [d async for d in list_dead_letters(mesh)]


async def test_same_message_id_is_stored_once(mesh: Mesh):
    mid = str(uuid.uuid4())
    first = await mesh.publish("CHAT", "once", to="n2", message_id=mid)
    second = await mesh.publish("CHAT", "once", to="n2", message_id=mid)
    assert not first.duplicate and second.duplicate
    assert second.seq == first.seq
    info = await mesh.admin.stream("NXS_CHAT")
    assert info.messages == 1


async def test_acked_message_is_not_handed_twice(mesh: Mesh, nats_server):
    """The same envelope arriving twice (a redelivery after a lost ack, a re-publish without the
    dedup header) reaches the handler once."""
    env = new_envelope("CHAT", "x", source=mesh.source, to=mesh.config.instance_id)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().publish(f"nxs.chat.{mesh.config.instance_id}._all", encode(env))
        await nc.jetstream().publish(f"nxs.chat.{mesh.config.instance_id}._all", encode(env))
    finally:
        await nc.close()
    calls = []

    async def handler(e):
        calls.append(e.id)

    consumer = await mesh.consume("chat", handler)
    await eventually(lambda: consumer.stats.duplicates == 1 and consumer.stats.handled == 1)
    assert calls == [env.id]


async def test_failure_is_redelivered_then_acked(mesh: Mesh):
    attempts = []

    async def flaky(env, delivery):
        attempts.append(delivery.deliveries)
        if len(attempts) == 1:
            raise RuntimeError("transient")

    consumer = await mesh.consume("chat", flaky, backoff_base=0.05)
    await mesh.publish("CHAT", "retry me", to=mesh.config.instance_id)
    await eventually(lambda: consumer.stats.acked == 1)
    assert attempts == [1, 2]
    assert consumer.stats.retried == 1 and consumer.stats.dead_lettered == 0


async def test_retry_signal_naks_with_delay(mesh: Mesh):
    seen = []

    async def handler(env):
        seen.append(env.id)
        if len(seen) == 1:
            raise Retry(0.05, "not yet")

    consumer = await mesh.consume("chat", handler)
    await mesh.publish("CHAT", "later", to=mesh.config.instance_id)
    await eventually(lambda: consumer.stats.acked == 1)
    assert len(seen) == 2 and seen[0] == seen[1]


async def test_dead_letter_after_max_deliveries_and_consumer_keeps_running(mesh: Mesh):
    good = []

    async def handler(env):
        if env.content == "poison":
            raise ValueError("cannot digest")
        good.append(env.content)

    consumer = await mesh.consume("chat", handler, max_deliver=3, backoff_base=0.02)
    await mesh.publish("CHAT", "poison", to=mesh.config.instance_id)
    await eventually(lambda: consumer.stats.dead_lettered == 1)
    await mesh.publish("CHAT", "fine", to=mesh.config.instance_id)
    await eventually(lambda: good == ["fine"])
    [dead] = await dead_letters(mesh)
    assert "ValueError: cannot digest" in dead.reason
    assert "3 deliveries" in dead.reason and dead.deliveries == 3
    assert dead.stream == "NXS_CHAT" and dead.subject.startswith("nxs.chat.")


async def test_reject_dead_letters_at_once_and_replay_puts_it_back(mesh: Mesh):
    calls = []

    async def handler(env):
        calls.append(env.content)
        if len(calls) == 1:
            raise Reject("missing context")

    consumer = await mesh.consume("chat", handler)
    await mesh.publish("CHAT", "hello", to=mesh.config.instance_id)
    await eventually(lambda: consumer.stats.dead_lettered == 1)
    [dead] = await dead_letters(mesh)
    assert dead.reason == "rejected by handler: missing context" and dead.deliveries == 1
    await replay_dead_letter(mesh, dead.seq)
    await eventually(lambda: consumer.stats.acked == 1)
    assert calls == ["hello", "hello"]
    assert await dead_letters(mesh) == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\x01garbage", "not valid JSON"),
        (b'{"hello": "world"}', "missing required field"),
        (b"[1, 2, 3]", "Expected `object`"),
        ("unknown_type", "unknown"),
        ("bad_id", "source.instance_id"),
    ],
)
async def test_malformed_input_is_dead_lettered_with_reason(mesh: Mesh, nats_server, payload, reason):
    me = mesh.config.instance_id
    if payload == "unknown_type":
        doc = json.loads(encode(new_envelope("CHAT", "x", source=mesh.source)))
        doc["message_type"] = "GOSSIP"
        payload = json.dumps(doc).encode()
    elif payload == "bad_id":
        doc = json.loads(encode(new_envelope("CHAT", "x", source=mesh.source)))
        doc["source"]["instance_id"] = "evil node; rm -rf"
        payload = json.dumps(doc).encode()
    got = []

    async def handler(env):
        got.append(env.content)

    consumer = await mesh.consume("chat", handler)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().publish(f"nxs.chat.{me}.main", payload)
    finally:
        await nc.close()
    await eventually(lambda: consumer.stats.invalid == 1)
    await mesh.publish("CHAT", "still alive", to=me)
    await eventually(lambda: got == ["still alive"])
    [dead] = await dead_letters(mesh)
    assert reason.lower() in dead.reason.lower()
    assert dead.reason.startswith("invalid envelope")
    assert dead.data == payload  # kept byte for byte


async def test_replay_from_sequence_time_and_last(mesh: Mesh):
    for i in range(3):
        await mesh.publish("CHAT", f"m{i}", to="n2")
    middle = datetime.now(UTC)
    for i in range(3, 6):
        await mesh.publish("CHAT", f"m{i}", to="n3")

    async def contents(**kw):
        return [r.envelope.content async for r in mesh.tail("chat", **kw)]

    assert await contents() == [f"m{i}" for i in range(6)]
    assert await contents(seq=4) == ["m3", "m4", "m5"]
    assert await contents(since=middle) == ["m3", "m4", "m5"]
    assert await contents(last=2) == ["m4", "m5"]
    assert await contents(last=2, instance="n2") == ["m1", "m2"]  # last N of a filtered view
    assert await contents(last=50) == [f"m{i}" for i in range(6)]
    assert await contents(instance="nobody") == []


async def test_tail_follow_sees_new_messages(mesh: Mesh):
    seen = []

    async def follow():
        async for rec in mesh.tail("chat", follow=True):
            seen.append(rec.envelope.content)
            if len(seen) == 2:
                return

    task = asyncio.create_task(follow())
    await mesh.publish("CHAT", "a", to="n2")
    await mesh.publish("CHAT", "b", to="n2")
    await asyncio.wait_for(task, 10)
    assert seen == ["a", "b"]


async def test_expired_message_is_never_handled(mesh: Mesh):
    await mesh.publish("CHAT", "stale", to=mesh.config.instance_id, ttl=1)
    await mesh.publish("CHAT", "fresh", to=mesh.config.instance_id, ttl=0)
    await asyncio.sleep(1.1)  # sleep-ok: the ttl (1 s, the smallest) has to run out; no event marks it
    got = []

    async def handler(env):
        got.append(env.content)

    consumer = await mesh.consume("chat", handler)
    await eventually(lambda: consumer.stats.expired == 1 and got == ["fresh"])


async def test_command_stream_drops_expired_server_side(mesh: Mesh):
    await mesh.publish("COMMAND", {"command": "x"}, to="n-away", ttl=1)
    await mesh.publish("HEARTBEAT", {}, ttl=1)

    async def counts():
        return [(await mesh.admin.stream(s)).messages for s in ("NXS_COMMAND", "NXS_HEARTBEAT")]

    assert await counts() == [1, 1]

    async def both_gone():
        return await counts() == [0, 0]

    await eventually(both_gone, timeout=10, what="server-side ttl removes the messages")


async def test_priority_with_backlog_higher_first(mesh: Mesh):
    me = mesh.config.instance_id
    order = [1, 9, 0, 5, 9, 3, 7, 1]
    for i, p in enumerate(order):
        await mesh.publish("COMMAND", {"command": f"c{i}"}, to=me, priority=p)
    handled = []

    async def handler(env):
        handled.append(env.priority)

    await mesh.consume("command", handler)
    await eventually(lambda: len(handled) == len(order))
    assert handled == sorted(order, reverse=True)


async def test_broadcast_vs_addressed(mesh_factory):
    a = await mesh_factory(instance_id="node-a")
    b = await mesh_factory(instance_id="node-b")
    got: dict[str, list] = {"a": [], "b": []}

    async def on_a(env):
        got["a"].append(env.content)

    async def on_b(env):
        got["b"].append(env.content)

    await a.consume("chat", on_a)
    await b.consume("chat", on_b)
    await a.publish("CHAT", "to-b", to="node-b")
    await a.publish("CHAT", "to-c", to="node-c")
    await a.publish("CHAT", "everyone")  # broadcast
    await a.publish("CHAT", "b-agent-x", to="node-b", agent="x")
    await eventually(lambda: len(got["a"]) == 1 and len(got["b"]) == 3)
    assert got["a"] == ["everyone"]
    assert sorted(got["b"]) == sorted(["to-b", "everyone", "b-agent-x"])


async def test_agent_addressing(mesh_factory):
    me = await mesh_factory(instance_id="node-a", agent_id="alpha")
    got = []

    async def handler(env):
        got.append(env.content)

    await me.consume("chat", handler, agent="alpha")
    await me.publish("CHAT", "for alpha", to="node-a", agent="alpha")
    await me.publish("CHAT", "for beta", to="node-a", agent="beta")
    await me.publish("CHAT", "for all agents", to="node-a")
    await eventually(lambda: len(got) == 2)
    assert sorted(got) == ["for all agents", "for alpha"]


async def test_stop_drains_inflight_work(mesh: Mesh):
    started, done = asyncio.Event(), []

    async def slow(env):
        started.set()
        await asyncio.sleep(0.3)  # sleep-ok: simulated work that stop() must wait for
        done.append(env.content)

    consumer = await mesh.consume("chat", slow)
    await mesh.publish("CHAT", "work", to=mesh.config.instance_id)
    await asyncio.wait_for(started.wait(), 10)
    await consumer.stop()
    assert done == ["work"] and consumer.stats.acked == 1


async def test_since_after_the_last_message_yields_nothing(mesh: Mesh):
    await mesh.publish("CHAT", "old", to="n2")
    later = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
    assert [r async for r in mesh.tail("chat", since=later)] == []


async def test_tail_of_the_work_queue_peeks_without_taking(mesh: Mesh):
    await mesh.publish("TASK", {"n": 1}, capability="resize")
    await mesh.publish("TASK", {"n": 2}, capability="resize", priority=7)
    assert [r.envelope.content async for r in mesh.tail("task")] == [{"n": 1}, {"n": 2}]
    assert (await mesh.admin.stream("NXS_TASK")).messages == 2  # still there for the workers


async def test_long_handler_is_kept_alive_not_redelivered(mesh: Mesh):
    """A handler that outlasts ack_wait sends in-progress acks, so the server does not redeliver it."""
    calls = []

    async def slow(env, delivery):
        calls.append(delivery.deliveries)
        await asyncio.sleep(2.5)  # sleep-ok: the work must outlast ack_wait (1 s) more than twice

    consumer = await mesh.consume("chat", slow, ack_wait=1.0)
    await mesh.publish("CHAT", "long job", to=mesh.config.instance_id)
    await eventually(lambda: consumer.stats.acked == 1, timeout=15)
    await mesh.publish("CHAT", "next", to=mesh.config.instance_id)  # flushes anything redelivered meanwhile
    await eventually(lambda: consumer.stats.acked == 2, timeout=15)
    assert calls == [1, 1] and consumer.stats.duplicates == 0  # a redelivery would show as a duplicate
