"""Presence on a secure mesh: least-privileged nodes elect their doctor and it alerts a death once."""

from __future__ import annotations

import asyncio

import pytest
from node_support import alerts_about

from nxs_mesh import Mesh
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.provision import provision
from nxs_mesh.testing import eventually
from nxs_mesh.testing.secure import SecureCluster


@pytest.mark.timeout(120)
async def test_a_least_privileged_doctor_holds_a_lease_and_alerts_a_silent_node_once(tmp_path):
    with SecureCluster(tmp_path) as sc:
        async with Mesh(sc.config("admin")) as admin:
            results = await provision(admin, ["n1", "n2", "n3"])
            assert any(r.stream == "KV NXS_DOCTORS" for r in results)
            fast = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, outbox=False)
            doctor = await Node(sc.config("n1"), fast).start()
            victim = await Node(sc.config("n2"), NodeOptions(heartbeat_interval=0.2, dead_after=1.0, outbox=False,
                                                             doctor=False)).start()
            try:
                assert doctor.doctor is not None and doctor.doctor.active
                await eventually(lambda: "n2" in doctor.doctor.peers if doctor.doctor else False, timeout=10,
                                 what="the doctor hears n2 (subscribed within its permissions)")
                assert victim.mesh is not None
                await victim.mesh.close()  # n2 falls silent without a word: a death
                await eventually(lambda: alerts_about(admin, "n2"), timeout=20, what="n2's death alert")
                await asyncio.sleep(2.0)  # sleep-ok: proving no second alert comes
                [alert] = await alerts_about(admin, "n2")
                assert alert["event"] == "dead" and alert["detected_by"] == "n1"
                assert doctor.problems == {}
            finally:
                await victim.stop()
                await doctor.stop()
