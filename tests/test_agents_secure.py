"""The agent registry on a secure mesh: admin provisions NXS_AGENTS; least-privileged nodes register,
resolve and (their doctor) orphan agents within their permissions."""

from __future__ import annotations

import pytest
from node_support import alerts_about

from nxs_mesh import Mesh
from nxs_mesh.client.agents import AgentState, agent_key, encode_record
from nxs_mesh.node.agents import orphan_agents, register_agent
from nxs_mesh.node.handoff import HandoffService, provisioned_consumers
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.provision import provision
from nxs_mesh.testing import eventually
from nxs_mesh.testing.secure import SecureCluster
from nxs_mesh.wire.errors import AgentNotFound
from nxs_mesh.wire.signing import record_signed_by


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


@pytest.mark.timeout(120)
async def test_registry_records_are_signed_and_a_forged_one_reads_as_absent(tmp_path):
    agent = "agent:secret"
    key = agent_key(agent)
    with SecureCluster(tmp_path) as sc:
        async with Mesh(sc.config("admin")) as admin:
            await provision(admin, ["n1", "n2", "n3"])
        async with Mesh(sc.config("n2")) as n2, Mesh(sc.config("n3")) as n3:
            assert n2.security.signer is not None
            rec = await register_agent(n2, "n2", agent)
            entry = await (await n2.agents.bucket()).get(key)
            assert entry is not None and record_signed_by(n2.security.signer.public, key, entry.value)
            assert (await n3.agents.get(agent)) == rec  # n3 believes n2's own record

            # n3 forges n2's record "standby" (so that it may take the agent): signed by n3, not the owner
            bucket = await n3.agents.bucket()
            forged = encode_record(rec.moved(state=AgentState.STANDBY), n3.security)
            last = await bucket.update(key, forged, last=entry.revision)
            assert last is not None  # the bucket takes the write (every node may write records) ...
            assert await n2.agents.get(agent) is None  # ... but nobody believes it
            assert await n3.agents.list() == []
            with pytest.raises(AgentNotFound):
                await n3.publish("CHAT", "hi", to_agent=agent)
            last = await bucket.update(key, rec.moved(state=AgentState.STANDBY).encode(), last=last)  # unsigned
            assert last is not None and await n2.agents.get(agent) is None

            again = await register_agent(n2, "n2", agent)  # the owner writes over the forgery, signed
            assert (await n3.agents.get(agent)) == again and (again.owner, again.epoch) == ("n2", 2)  # never back
            # an orphaned record is believed from any trusted node (the Doctor that saw the owner die)
            assert await orphan_agents(n3, "n2") == [agent]
            found = await n2.agents.get(agent)
            assert found is not None and (found.owner, found.state) == ("n2", AgentState.ORPHANED)


@pytest.mark.timeout(120)
async def test_secure_nodes_hand_an_agent_off_within_their_permissions(tmp_path):
    agent = "agent:secret"
    with SecureCluster(tmp_path) as sc:
        async with Mesh(sc.config("admin")) as admin:
            results = await provision(admin, ["n1", "n2", "n3"], agents=[agent])  # `nxs init --agent`
            made = {r.stream for r in results if r.action == "created"}
            assert {f"consumer {durable}" for _, durable, _ in provisioned_consumers(["n1", "n2"], [agent])} <= made
        heard: dict[str, list[str]] = {"n1": [], "n2": []}
        nodes = []
        for name, agents in (("n1", (agent,)), ("n2", ())):
            node = Node(sc.config(name),
                        NodeOptions(heartbeat_interval=0.2, dead_after=1.0, outbox=False, doctor=False, agents=agents))
            service = HandoffService()

            @service.on_message
            async def got(_agent: str, env, name: str = name) -> None:
                heard[name].append(env.content)

            node.parts.append(service)
            nodes.append(await node.start())
        try:
            async with Mesh(sc.config("n3")) as user:
                await user.publish("CHAT", "before", to_agent=agent)
                await eventually(lambda: heard["n1"] == ["before"], timeout=10, what="n1 hears the agent's chat")
                outcome = await user.handoff(agent, to="n2", context=b"secret context", timeout=10)
                assert (outcome.to_node, outcome.epoch, outcome.released) == ("n2", 2, True)
                rec = await user.agents.get(agent)  # signed by n2, its new owner: believed
                assert rec is not None and (rec.owner, rec.state, rec.epoch) == ("n2", AgentState.ACTIVE, 2)
                await user.publish("CHAT", "after", to_agent=agent)
                await eventually(lambda: heard["n2"] == ["after"], timeout=10, what="n2 hears the agent's chat")
                assert heard["n1"] == ["before"]
        finally:
            for node in nodes:
                await node.stop()
