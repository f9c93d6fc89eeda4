"""Every resource shows its state in its repr (httpcore's habit); these assert the whole string."""

from __future__ import annotations

from nxs_mesh import Mesh, MeshConfig, Node, NodeOptions
from nxs_mesh.client.outbox import Outbox
from nxs_mesh.node.doctor import Doctor
from nxs_mesh.testing import unique_id


async def test_mesh_repr_through_its_lifecycle(nats_server, tmp_path):
    cfg = MeshConfig(servers=(nats_server.url,), instance_id="repr-node", agent_id="main")
    mesh = Mesh(cfg, outbox=tmp_path / "box.sqlite")
    assert repr(mesh) == "<Mesh repr-node/main UNOPENED [server -, 0 consumers]>"
    await mesh.connect()
    netloc = nats_server.url.removeprefix("nats://")
    assert repr(mesh) == f"<Mesh repr-node/main OPEN [server {netloc}, 0 consumers, 0 outbox]>"
    assert repr(mesh.link) == f"<Link repr-node CONNECTED [server {nats_server.url}, gen 1]>"

    async def handler(env):
        return None

    consumer = await mesh.consume("chat", handler)
    assert repr(consumer) == "<Consumer NXS_CHAT/chat-repr-node-all RUNNING [handled 0, dead 0, inflight 0]>"
    assert repr(mesh) == f"<Mesh repr-node/main OPEN [server {netloc}, 1 consumers, 0 outbox]>"
    await mesh.close()
    assert repr(consumer) == "<Consumer NXS_CHAT/chat-repr-node-all STOPPED [handled 0, dead 0, inflight 0]>"
    assert repr(mesh) == "<Mesh repr-node/main CLOSED [server -, 0 consumers]>"


async def test_node_and_doctor_reprs(mesh, mesh_config):
    nid = unique_id("rn")
    node = Node(mesh_config.replace(instance_id=nid), NodeOptions(heartbeat_interval=0.2, dead_after=1.0,
                                                                  fetch_timeout=1.0, doctor=False))
    assert repr(node) == f"<Node '{nid}' NEW [server -, 0 consumers, 0 inflight]>"
    async with node:
        assert repr(node) == f"<Node '{nid}' RUNNING [server {mesh.connected_url}, 1 consumers, 0 inflight]>"
    assert repr(node) == f"<Node '{nid}' STOPPED [server -, 1 consumers, 0 inflight]>"
    doctor = Doctor(mesh, dead_after=5.0)
    assert repr(doctor) == f"<Doctor {mesh.config.instance_id} standby [no nodes; dead after 5.0s]>"
    await doctor.start()
    try:
        assert repr(doctor) == f"<Doctor {mesh.config.instance_id} active [no nodes; dead after 5.0s]>"
    finally:
        await doctor.stop()


def test_outbox_repr(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    try:
        box.put("nxs.chat.a._all", b"{}", {}, message_id="m1")
        assert repr(box) == f"<Outbox {tmp_path / 'o.sqlite'} [1 queued, 2 bytes]>"
    finally:
        box.close()
