"""Every background task has an owner: a loop that dies is logged, shown as degraded, and restarted."""

from __future__ import annotations

import asyncio

from node_support import wait_state

from nxs_mesh import Mesh, MeshConfig, Node, NodeOptions
from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.testing import eventually, unique_id

FAST = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False)


async def test_supervisor_restarts_a_dying_loop_reports_it_and_stops_everything():
    runs, changes = [], []
    gate = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")
        await gate.wait()

    sup = Supervisor("unit", on_change=lambda: changes.append(dict(sup.problems)), healthy_after=0.2,
                     backoff_base=0.01)
    sup.keep("flaky", flaky)
    await eventually(lambda: len(runs) == 3, timeout=5, what="two restarts")
    assert sup.restarts == 2 and "RuntimeError: boom 2" in changes[-1]["flaky"]
    await eventually(lambda: not sup.problems, timeout=5, what="healthy again after running a while")
    action = sup.spawn("forever", asyncio.Event().wait())
    assert repr(sup) == "<Supervisor 'unit' [1 loops, 1 actions, 0 failing]>"
    await sup.stop(timeout=0.1)
    assert action.cancelled() and sup.task("flaky") is None


async def test_a_consumer_loop_whose_connection_breaks_is_reported_degraded_and_recovers(
    mesh: Mesh, mesh_config: MeshConfig
):
    """The server closes the node's connection (a message over max_payload: nats-py gives the
    connection up for good). The link reopens it; the command consumer's loop, bound to the old one,
    dies, is restarted by its supervisor, and the node says so in its STATUS until it has recovered."""
    node = Node(mesh_config.replace(instance_id=unique_id("sup")), FAST)
    async with node:
        await wait_state(mesh, node.node_id, "running")
        assert node.mesh is not None
        nc = node.mesh.link.nc
        await nc.publish("nxs.fault.injection", b"x" * (nc.max_payload - 10), headers={"X-Fill": "y" * 200})
        status = await wait_state(mesh, node.node_id, "degraded")
        assert any("consumer command-" in name for name in status["problems"]), status["problems"]
        reply = await mesh.request(node.node_id, "ping", timeout=10)
        assert reply.content["pong"] == node.node_id
        await wait_state(mesh, node.node_id, "running", timeout=20)
        assert node.mesh.reopens == 1 and node.state == "running"
