"""The back door: nxs discovers and prompts agents hosted with the real `synadia-ai-agent-service` (PyPI):
`mesh.sap`, a mesh agent calling one from its handler, `nxs agents --sap`, `nxs prompt`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from node_support import run_cli
from synadia_ai.agent_service import AgentService

from nxs_mesh import EnvelopeError, Mesh, MeshConfig, NoResponders, RemoteError
from nxs_mesh.client.sap import open_sdk_connection
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.testing import unique_id
from nxs_mesh.transport.server import NatsServer


@pytest.fixture
async def hosted(mesh_config: MeshConfig) -> AsyncIterator[AgentService]:
    """`poet`, a protocol agent written with the SDK alone: streams two chunks; "fail" raises."""
    nc = await open_sdk_connection(mesh_config, "host")  # any nats-py client would do
    service = AgentService(agent="poet", owner="alice", session_name="desk", nc=nc, description="writes verse")

    async def on_prompt(envelope: Any, stream: Any) -> None:
        if envelope.prompt == "fail":
            raise ValueError("no rhyme")
        if envelope.prompt == "extras":  # what the caller put next to the prompt (§5.6)
            await stream.send(json.dumps(envelope.extras, sort_keys=True))
            return
        await stream.send("roses, ")
        await stream.send(f"{envelope.prompt}!")

    service.on_prompt(on_prompt)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await nc.close()


async def test_mesh_lists_and_prompts_a_protocol_agent(mesh: Mesh, hosted: AgentService):
    assert repr(mesh.sap) == f"<SapAgents over {mesh.connected_url}>"
    [info] = [i for i in await mesh.sap.list() if i.agent == "poet"]
    assert (info.name, info.description, info.instance_id) == ("poet.alice.desk", "writes verse", hosted.instance_id)
    assert info.subject == "agents.prompt.poet.alice.desk"
    assert [part async for part in mesh.sap.prompt("poet", "violets")] == ["roses, ", "violets!"]
    assert await mesh.sap.ask("poet.alice", "tulips") == "roses, tulips!"
    assert await mesh.sap.ask(hosted.instance_id, "by id") == "roses, by id!"


async def test_errors_are_the_meshs(mesh: Mesh, hosted: AgentService):
    with pytest.raises(NoResponders, match="no Synadia-protocol agent 'nobody' answers discovery"):
        await mesh.sap.ask("nobody", "hi")
    with pytest.raises(NoResponders):
        await mesh.sap.ask("poet.bob", "hi")  # another owner's poet: not this one
    with pytest.raises(RemoteError, match="service error 500: handler error"):
        await mesh.sap.ask("poet", "fail")
    with pytest.raises(EnvelopeError, match="prompt: .*empty"):
        await mesh.sap.ask("poet", "")  # refused by the SDK before it is sent


async def test_a_mesh_agent_calls_a_protocol_agent(mesh: Mesh, mesh_config: MeshConfig, hosted: AgentService):
    node = Node(mesh_config.replace(instance_id=unique_id("node")), NodeOptions(doctor=False, fetch_timeout=1.0))

    @node.command("verse")
    async def verse(args, ctx):
        return await ctx.mesh.sap.ask("poet", args)

    async with node:
        reply = await mesh.request(node.node_id, "verse", "lilies", timeout=10)
    assert reply.content == "roses, lilies!"


async def test_cli_lists_and_prompts(nats_server: NatsServer, hosted: AgentService):
    code, out, err = await run_cli(nats_server.url, "agents", "--sap")
    assert code == 0, err
    assert "poet" in out and "alice" in out and "desk" in out and "writes verse" in out
    code, out, err = await run_cli(nats_server.url, "agents", "--sap", "--json")
    assert code == 0 and '"agent":"poet"' in out and '"owner":"alice"' in out
    code, out, err = await run_cli(nats_server.url, "prompt", "poet", "daisies")
    assert (code, out) == (0, "roses, daisies!\n"), err
    code, out, err = await run_cli(nats_server.url, "prompt", "poet", "extras", "--message-id", "k1", "-p", "7")
    assert (code, out) == (0, '{"message_id": "k1", "priority": 7}\n'), err
    code, out, err = await run_cli(nats_server.url, "prompt", "nobody", "hi")
    assert code == 1 and "no Synadia-protocol agent 'nobody'" in err and "Traceback" not in err
    code, out, err = await run_cli(nats_server.url, "prompt", "poet", "fail")
    assert code == 1 and "service error 500" in err and "Traceback" not in err
