"""The agent registry on a secure mesh: admin provisions NXS_AGENTS; least-privileged nodes register,
resolve and (their doctor) orphan agents within their permissions."""

from __future__ import annotations

import pytest
from node_support import alerts_about

from nxs_mesh import Mesh
from nxs_mesh.client.agents import AgentState
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.provision import provision
from nxs_mesh.testing import eventually
from nxs_mesh.testing.secure import SecureCluster


@pytest.mark.timeout(120)
async def test_secure_nodes_register_address_and_orphan_agents(tmp_path):
    with SecureCluster(tmp_path) as sc:
        async with Mesh(sc.config("admin")) as admin:
            results = await provision(admin, ["n1", "n2", "n3"])
            assert [r.action for r in results if r.stream == "KV NXS_AGENTS"] == ["created"]
            fast = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, outbox=False)
            doctor = await Node(sc.config("n1"), fast).start()
            victim = await Node(sc.config("n2"), NodeOptions(heartbeat_interval=0.2, dead_after=1.0, outbox=False,
                                                             doctor=False, agents=("agent:secret",))).start()
            try:
                assert doctor.mesh is not None and victim.mesh is not None
                ack = await doctor.mesh.publish("CHAT", "hi", to_agent="agent:secret")  # n1 resolves via the KV
                rec = await admin.admin.message(ack.stream, ack.seq or 0)
                assert rec is not None and rec.subject == "nxs.chat.n2.agent:secret"
                await eventually(lambda: "n2" in doctor.doctor.peers if doctor.doctor else False, timeout=10,
                                 what="the doctor hears n2")
                await victim.mesh.close()  # n2 falls silent without a word: a death
                [alert] = await eventually(lambda: alerts_about(admin, "n2"), timeout=20, what="n2's death alert")
                assert alert["orphaned_agents"] == ["agent:secret"] and "hook_errors" not in alert
                found = await admin.agents.get("agent:secret")
                assert found is not None and (found.owner, found.state) == ("n2", AgentState.ORPHANED)
            finally:
                await victim.stop()
                await doctor.stop()
