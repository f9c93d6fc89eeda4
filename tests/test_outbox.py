"""The offline outbox against a real server: queue while down, drain in order after, survive a restart."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from nxs_mesh import Mesh, MeshConfig, OutboxFull
from nxs_mesh.client.outbox import Outbox
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.connection import server_list, server_path
from nxs_mesh.transport.server import NatsServer


async def _stored_ids(mesh: Mesh, instance: str) -> list[str]:
    return [rec.envelope.id async for rec in mesh.tail("chat", instance=instance)]


async def test_outbox_queues_while_down_and_drains_in_order(nats_server: NatsServer, tmp_path: Path) -> None:
    to = unique_id("dst")
    cfg = MeshConfig(servers=(nats_server.url,), instance_id=unique_id("node"))
    box_path = tmp_path / "outbox.sqlite"
    async with Mesh(cfg, outbox=box_path) as mesh:
        first = await mesh.publish("CHAT", "before", to=to)
        assert not first.queued and first.seq is not None
        assert mesh.server_path == "local"

        nats_server.stop()
        await eventually(lambda: mesh.server_path == "disconnected", what="client noticed the server stop")
        queued = [await mesh.publish("CHAT", i, to=to) for i in range(50)]
        assert all(r.queued and r.seq is None for r in queued)
        assert len(mesh.outbox or ()) == 50

        nats_server.start()
        assert mesh.flusher is not None
        assert await mesh.flusher.wait_empty(timeout=20), mesh.flusher.last_error
        after = await mesh.publish("CHAT", "after", to=to)
        assert not after.queued

        ids = await _stored_ids(mesh, to)
        assert ids == [first.message_id, *(r.message_id for r in queued), after.message_id]
        print(f"outbox drain: {len(queued)} messages in {mesh.flusher.last_drain_s}s")


async def test_outbox_survives_a_worker_restart(nats_server: NatsServer, tmp_path: Path) -> None:
    to = unique_id("dst")
    box_path = tmp_path / "node" / "outbox.sqlite"
    cfg = MeshConfig(servers=(nats_server.url,), instance_id=unique_id("node"))
    ids = [str(uuid.uuid4()) for _ in range(5)]
    async with Mesh(cfg, outbox=box_path) as mesh:
        nats_server.stop()
        await eventually(lambda: mesh.server_path == "disconnected")
        for mid in ids:
            assert (await mesh.publish("CHAT", mid, to=to, message_id=mid)).queued
    # The "worker" is gone; what it queued is on disk.
    left = Outbox(box_path)
    assert [i.message_id for i in left.peek(10)] == ids
    left.close()

    nats_server.start()
    async with Mesh(cfg, outbox=box_path) as mesh:  # the restarted worker drains what waited
        assert mesh.flusher is not None
        assert await mesh.flusher.wait_empty(timeout=20), mesh.flusher.last_error
        assert await _stored_ids(mesh, to) == ids


async def test_outbox_bound_is_a_clear_error(nats_server: NatsServer, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "small.sqlite", max_messages=3)
    cfg = MeshConfig(servers=(nats_server.url,), instance_id=unique_id("node"))
    async with Mesh(cfg, outbox=box) as mesh:
        nats_server.stop()
        await eventually(lambda: mesh.server_path == "disconnected")
        for i in range(3):
            assert (await mesh.publish("CHAT", i, to="x")).queued
        with pytest.raises(OutboxFull, match="outbox .* is full"):
            await mesh.publish("CHAT", "one too many", to="x")
        # Re-queuing a message that already waits is not an error (a retry by the caller).
        item = box.peek(1)[0]
        assert not box.put(item.subject, item.data, item.headers, message_id=item.message_id)
    box.close()


async def test_heartbeats_are_never_queued(nats_server: NatsServer, tmp_path: Path) -> None:
    cfg = MeshConfig(servers=(nats_server.url,), instance_id=unique_id("node"))
    async with Mesh(cfg, outbox=tmp_path / "o.sqlite") as mesh:
        mesh.publish_timeout = 0.5
        nats_server.stop()
        await eventually(lambda: mesh.server_path == "disconnected")
        with pytest.raises(Exception):  # noqa: B017 - not queued: the error reaches the caller
            await mesh.publish("HEARTBEAT", "alive")
        assert mesh.outbox is not None and len(mesh.outbox) == 0


def test_server_order_and_path() -> None:
    servers = server_list("nats://127.0.0.1:4222", ["nats://100.64.0.2:4222", "nats://100.64.0.3:4222"],
                          "wss://relay.example.net:443")
    assert servers[0] == "nats://127.0.0.1:4222" and servers[-1].startswith("wss://")
    assert server_path(servers, "nats://127.0.0.1:4222") == "local"
    assert server_path(servers, "nats://100.64.0.3:4222") == "peer"
    assert server_path(servers, "wss://relay.example.net:443") == "relay"
    assert server_path(servers, None) == "disconnected"
