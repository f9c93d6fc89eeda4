"""The lean JetStream publisher (nxs_mesh.transport.publisher) behind Mesh.send / publish_many / the outbox flusher,
against a real server: acks, dedup, order, the error types, timeouts, reconnects and close."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from nxs_mesh import Mesh
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire.envelope import new_envelope
from nxs_mesh.wire.errors import ClosedError, JetStreamUnavailable, MeshError, MeshTimeout, StreamError

MeshFactory = Callable[..., Awaitable[Mesh]]


async def _stored_ids(mesh: Mesh, to: str) -> list[str]:
    return [rec.envelope.id async for rec in mesh.tail("chat", instance=to)]


async def test_sync_publish_returns_seq_and_duplicate(mesh: Mesh) -> None:
    to = unique_id("dst")
    env = new_envelope("CHAT", "one", source=mesh.source, to=to)
    first = await mesh.send(env)
    assert (first.stream, first.duplicate, first.queued) == ("NXS_CHAT", False, False)
    assert first.message_id == env.id and first.seq is not None
    second = await mesh.publish("CHAT", "two", to=to)
    assert second.seq == first.seq + 1 and not second.duplicate
    again = await mesh.send(env)  # same message_id: dropped by the stream's duplicate window
    assert again.duplicate and again.seq == first.seq
    assert await _stored_ids(mesh, to) == [env.id, second.message_id]


async def test_reply_subject_is_under_the_configured_inbox(mesh: Mesh) -> None:
    assert mesh.pub.reply_prefix.startswith(mesh.config.inbox + ".")


async def test_publish_many_keeps_order_and_dedups(mesh: Mesh) -> None:
    to = unique_id("dst")
    envs = [new_envelope("CHAT", i, source=mesh.source, to=to) for i in range(500)]
    mesh.pub.max_in_flight = 64  # exercise the in-flight bound (the sender waits for acks)
    results = await mesh.publish_many(iter(envs))
    assert [r.message_id for r in results] == [e.id for e in envs]
    seqs = [r.seq for r in results]
    assert all(s is not None for s in seqs) and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert not any(r.duplicate for r in results)

    mixed = envs[:10] + [new_envelope("CHAT", "new", source=mesh.source, to=to)]
    again = await mesh.publish_many(mixed)
    assert [r.duplicate for r in again] == [True] * 10 + [False]
    assert [r.seq for r in again[:10]] == seqs[:10]
    assert await _stored_ids(mesh, to) == [e.id for e in envs] + [mixed[-1].id]
    assert await mesh.publish_many([]) == []


async def test_no_stream_is_jetstream_unavailable(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(ensure=False)  # a fresh server: no stream listens on nxs.chat.>
    with pytest.raises(JetStreamUnavailable, match="no response from stream") as info:
        await mesh.publish("CHAT", "x", to="nobody")
    assert isinstance(info.value, MeshError)
    with pytest.raises(JetStreamUnavailable):
        await mesh.publish_many([new_envelope("CHAT", i, source=mesh.source, to="nobody") for i in range(3)])


async def test_api_error_in_the_ack_is_a_stream_error(mesh: Mesh) -> None:
    headers = {"Nats-Msg-Id": unique_id("m"), "Nats-Expected-Stream": "NOT_THIS_ONE"}
    with pytest.raises(StreamError, match="expected stream"):
        await mesh.pub.publish(f"nxs.chat.{unique_id('d')}.main", b"{}", headers, 2.0)
    [err] = await mesh.pub.publish_batch([(f"nxs.chat.{unique_id('d')}.main", b"{}", headers)], 2.0)
    assert isinstance(err, StreamError)


async def test_silent_responder_times_out(mesh: Mesh, nats_server: NatsServer) -> None:
    """Something answers the subject's interest but never replies: MeshTimeout, nothing left registered."""
    silent = await nats.connect(nats_server.url)
    try:
        seen = asyncio.Event()

        async def on_msg(msg: Any) -> None:  # it hears everything and answers nothing
            seen.set()

        await silent.subscribe("nxs.silent.>", cb=on_msg)
        # Its own probe coming back proves the server holds the interest (a flush's PONG may answer an
        # earlier PING of nats-py's, so it proves nothing).
        await silent.publish("nxs.silent.probe", b"")
        await asyncio.wait_for(seen.wait(), 10)
        mesh.publish_timeout = 0.3
        env = new_envelope("CHAT", "x", source=mesh.source, to="nobody")
        with pytest.raises(MeshTimeout, match="publish to nxs.silent.a: timed out"):
            await mesh.send(env, subject="nxs.silent.a")
        with pytest.raises(MeshTimeout, match="publish: timed out"):
            await mesh.pub.publish_batch([("nxs.silent.b", b"{}", {"Nats-Msg-Id": unique_id("m")})] * 3, 0.3)
        assert "0 waiting, 0 batches" in repr(mesh.pub)
    finally:
        await silent.close()


async def test_server_stop_times_out_then_recovers_after_restart(mesh: Mesh, nats_server: NatsServer) -> None:
    to = unique_id("dst")
    assert (await mesh.publish("CHAT", "before", to=to)).seq is not None
    mesh.publish_timeout = 0.5
    nats_server.stop()
    await eventually(lambda: mesh.server_path == "disconnected", what="client noticed the server stop")
    with pytest.raises(MeshTimeout):
        await mesh.publish("CHAT", "while down", to=to)
    with pytest.raises(MeshTimeout):
        await mesh.publish_many([new_envelope("CHAT", i, source=mesh.source, to=to) for i in range(5)])

    nats_server.start()
    await eventually(lambda: mesh.server_path == "local", what="client reconnected")
    mesh.publish_timeout = 5.0
    # The ack subscription survived the reconnect (nats-py re-subscribes it).
    assert (await mesh.publish("CHAT", "after", to=to)).seq is not None
    results = await mesh.publish_many([new_envelope("CHAT", i, source=mesh.source, to=to) for i in range(5)])
    assert all(r.seq is not None for r in results)


async def test_server_stop_with_an_outbox_queues(nats_server: NatsServer, tmp_path: Path,
                                                 mesh_factory: MeshFactory) -> None:
    to = unique_id("dst")
    mesh = await mesh_factory(outbox=tmp_path / "outbox.sqlite")
    mesh.publish_timeout = 0.5
    nats_server.stop()
    await eventually(lambda: mesh.server_path == "disconnected")
    queued = await mesh.publish("CHAT", "while down", to=to)
    assert queued.queued and queued.seq is None
    nats_server.start()
    assert mesh.flusher is not None
    assert await mesh.flusher.wait_empty(timeout=20), mesh.flusher.last_error
    assert await _stored_ids(mesh, to) == [queued.message_id]


async def test_close_with_publishes_pending_leaves_nothing(nats_server: NatsServer,
                                                           mesh_factory: MeshFactory) -> None:
    before = asyncio.all_tasks()
    silent = await nats.connect(nats_server.url)
    await silent.subscribe("nxs.silent.>")  # interest, no replies: the publishes below stay pending
    await silent.flush()
    mesh = await mesh_factory()
    pub = mesh.pub
    env = new_envelope("CHAT", "x", source=mesh.source, to="nobody")
    one = asyncio.create_task(mesh.send(env, subject="nxs.silent.one"))
    many = asyncio.create_task(pub.publish_batch([("nxs.silent.many", b"{}", {"Nats-Msg-Id": "m"})] * 10, 30.0))
    await eventually(lambda: "1 waiting, 1 batches" in repr(pub))
    await mesh.close()
    for task in (one, many):
        with pytest.raises(ClosedError):
            await task
    assert "0 waiting, 0 batches" in repr(pub)
    with pytest.raises(ClosedError):
        await mesh.publish("CHAT", "after close", to="nobody")
    await silent.close()
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert not left, left
