"""The ``handoff`` COMMAND (node/handoff_command.py): a client that does not speak the SYNC protocol asks a
node to hand an agent off; real server, real `nxs node run` workers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from handoff_support import AGENT, chat, contents, record_is
from node_support import Worker, wait_state

from nxs_mesh import Mesh
from nxs_mesh.client.agents import AgentState
from nxs_mesh.node.handoff import HandoffService
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.provision import provision
from nxs_mesh.testing import unique_id
from nxs_mesh.testing.secure import SecureCluster
from nxs_mesh.wire.errors import RemoteError


@pytest.mark.timeout(120)
async def test_the_handoff_command_moves_the_agent_and_answers_with_the_outcome(
    mesh: Mesh, workers: Callable[..., Worker]
):
    a, b = unique_id("a"), unique_id("b")
    workers(a, "--agent", AGENT, "--no-doctor")
    wb = workers(b, "--no-doctor")
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")
    await chat(mesh, "m1")

    env = await mesh.request(a, "handoff", {"agent": AGENT, "to": b, "timeout": 20}, timeout=60)
    out = env.content
    assert (out["agent"], out["from"], out["to"], out["epoch"], out["released"]) == (AGENT, a, b, 2, True)
    assert out["ready"].startswith("I'm ready.") and set(out["steps"]) >= {"offer", "prepare", "commit", "release"}
    await record_is(mesh, AGENT, b, AgentState.ACTIVE, 2)
    await chat(mesh, "after")
    assert await contents(wb, AGENT, 2) == ["m1", "after"]

    # any node with a HandoffService may drive it, not only the owner: B (the owner now) is asked via A
    back = await mesh.request(a, "handoff", {"agent": AGENT, "to": a, "context": {"note": "x"}}, timeout=60)
    assert (back.content["from"], back.content["to"], back.content["epoch"]) == (b, a, 3)
    await record_is(mesh, AGENT, a, AgentState.ACTIVE, 3)


@pytest.mark.timeout(120)
async def test_the_handoff_command_answers_refusals_and_bad_args_as_the_results_error(
    mesh: Mesh, workers: Callable[..., Worker]
):
    a, b = unique_id("a"), unique_id("b")
    workers(a, "--agent", AGENT, "--no-doctor")
    workers(b, "--agent", "agent:other", "--no-doctor", "--max-agents", "1")  # full: it runs one already
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")

    with pytest.raises(RemoteError, match="AgentNotFound"):
        await mesh.request(a, "handoff", {"agent": "agent:nobody", "to": b}, timeout=30)
    with pytest.raises(RemoteError, match="HandoffRefused: .*at capacity"):
        await mesh.request(a, "handoff", {"agent": AGENT, "to": b}, timeout=30)
    with pytest.raises(RemoteError, match="HandoffError: .*already lives on"):
        await mesh.request(a, "handoff", {"agent": AGENT, "to": a}, timeout=30)
    with pytest.raises(RemoteError, match='bad handoff args: "agent" and "to" are required'):
        await mesh.request(a, "handoff", {"agent": AGENT}, timeout=30)
    with pytest.raises(RemoteError, match="bad handoff args: unknown argument tooo"):
        await mesh.request(a, "handoff", {"agent": AGENT, "to": b, "tooo": 1}, timeout=30)
    with pytest.raises(RemoteError, match="bad handoff args: .*timeout"):
        await mesh.request(a, "handoff", {"agent": AGENT, "to": b, "timeout": -1}, timeout=30)
    await record_is(mesh, AGENT, a, AgentState.ACTIVE, 1)  # nothing moved


@pytest.mark.timeout(120)
async def test_on_a_secure_mesh_the_handoff_command_obeys_the_command_policy(tmp_path):
    agent = "agent:secret"
    with SecureCluster(tmp_path) as sc:
        async with Mesh(sc.config("admin")) as admin:
            await provision(admin, ["n1", "n2", "n3"], agents=[agent])
            nodes = []
            for name, agents in (("n1", (agent,)), ("n2", ())):
                node = Node(sc.config(name), NodeOptions(heartbeat_interval=0.2, dead_after=1.0, outbox=False,
                                                         doctor=False, agents=agents))
                node.parts.append(HandoffService())
                nodes.append(await node.start())
            try:
                async with Mesh(sc.config("n3")) as other:  # a trusted node, but not the admin: default policy
                    with pytest.raises(RemoteError, match="not authorized: node 'n3' may not run command 'handoff'"):
                        await other.request("n1", "handoff", {"agent": agent, "to": "n2"}, timeout=20)
                assert (rec := await admin.agents.get(agent)) is not None and rec.owner == "n1"
                done = await admin.request("n1", "handoff", {"agent": agent, "to": "n2", "timeout": 10}, timeout=60)
                assert (done.content["to"], done.content["epoch"]) == ("n2", 2)
                await record_is(admin, agent, "n2", AgentState.ACTIVE, 2)
            finally:
                for node in nodes:
                    await node.stop()
