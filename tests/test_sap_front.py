"""The Synadia front door, in-process: the unmodified `synadia-ai-agents` client (from PyPI) discovers a
node's agents and prompts them; duplicates run once; the mesh's priority and command policy apply."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from synadia_ai.agents import Agents, Envelope, ProtocolError, ResponseChunk, StatusChunk

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.client.consumer import durable_name
from nxs_mesh.client.sap import open_sdk_connection
from nxs_mesh.client.sap_host import reply_subject, sap_name
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.sap import SapFrontDoor, sap_send
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.wire.errors import ConfigError, Reject

FAST = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False)


def sap_node(mesh_config: MeshConfig, *agents: str, **options: Any) -> tuple[Node, list[str]]:
    """A node whose `prompt` handler streams a chunk, then answers with a count of its runs."""
    node = Node(mesh_config.replace(instance_id=unique_id("node")),
                NodeOptions(**{**FAST.__dict__, "agents": agents, **options}))
    runs: list[str] = []

    @node.command("prompt")
    async def prompt(args, ctx):
        text = args["prompt"]
        runs.append(text)
        if text == "refuse":
            raise Reject("not this one")
        await sap_send(ctx, "thinking: ")
        return f"{text} (run {len(runs)})"

    SapFrontDoor.attach(node, heartbeat_interval=1)
    return node, runs


@contextlib.asynccontextmanager
async def sdk_client(mesh_config: MeshConfig) -> AsyncIterator[Agents]:
    nc = await open_sdk_connection(mesh_config, "test-caller")  # a plain nats-py client for the SDK
    agents = Agents(nc=nc)
    try:
        yield agents
    finally:
        await agents.close()
        await nc.close()


async def collect(agent: Any, prompt: Any, **kw: Any) -> tuple[list[str], list[str]]:
    """(response texts, status tokens) of one prompt stream."""
    texts, statuses = [], []
    async for chunk in agent.prompt(prompt, **kw):
        if isinstance(chunk, ResponseChunk):
            texts.append(chunk.text)
        elif isinstance(chunk, StatusChunk):
            statuses.append(chunk.status)
    return texts, statuses


async def test_the_sdk_discovers_a_mesh_agent_and_its_reply_streams(mesh_config: MeshConfig):
    node, runs = sap_node(mesh_config, "helper:Main")
    async with node, sdk_client(mesh_config) as agents:
        [door] = [p for p in node.parts if isinstance(p, SapFrontDoor)]
        assert repr(door) == "<SapFrontDoor [helper:Main] 0 open, 0 handled>"
        found = await agents.discover()
        [agent] = [a for a in found if a.metadata.get("nxs_node") == node.node_id]
        assert (agent.agent, agent.owner, agent.session_name) == (sap_name("helper:Main"), "nxs", "default")
        assert agent.agent == "helper-main" and agent.metadata["nxs_agent"] == "helper:Main"
        assert agent.prompt_subject == "agents.prompt.helper-main.nxs.default"
        texts, statuses = await collect(agent, "hello")
        assert repr(door) == "<SapFrontDoor [helper:Main] 0 open, 1 handled>"
        assert texts == ["thinking: ", "hello (run 1)"] and statuses[:1] == ["ack"]
        status = await agent.status()
        assert status.agent == "helper-main"
    assert runs == ["hello"]


async def test_a_prompt_is_a_durable_command_with_a_result(mesh_config: MeshConfig, mesh: Mesh):
    """Behind the door the prompt is a COMMAND `prompt` to the node and agent, stored in NXS_COMMAND,
    answered with a RESULT carrying the whole text."""
    node, _ = sap_node(mesh_config, "clerk")
    async with node, sdk_client(mesh_config) as agents:
        [agent] = [a for a in await agents.discover() if a.metadata.get("nxs_node") == node.node_id]
        await collect(agent, Envelope(prompt="file it", priority=7, ttl=90))
        commands = [r.envelope async for r in mesh.tail("command", instance=node.node_id, agent="clerk")]
        [cmd] = [e for e in commands if e is not None]
        assert cmd.content["command"] == "prompt" and cmd.content["args"] == {"prompt": "file it"}
        assert (cmd.priority, cmd.ttl) == (7, 90) and cmd.payload.metadata["sap_reply"].startswith("_INBOX.")
        results = [r.envelope async for r in mesh.tail("result", filters=[f"nxs.result.{cmd.correlation_id}"])]
        assert [e.content for e in results if e is not None] == ["thinking: file it (run 1)"]


async def test_a_duplicate_runs_once_and_is_answered_with_the_first_result(mesh_config: MeshConfig):
    node, runs = sap_node(mesh_config, "clerk")
    async with node, sdk_client(mesh_config) as agents:
        [agent] = [a for a in await agents.discover() if a.metadata.get("nxs_node") == node.node_id]
        first, _ = await collect(agent, Envelope(prompt="once", message_id="order-42"))
        again, _ = await collect(agent, Envelope(prompt="once", message_id="order-42"))
        other, _ = await collect(agent, Envelope(prompt="once", message_id="order-43"))
    assert "".join(first) == "thinking: once (run 1)"
    assert "".join(again) == "thinking: once (run 1)"  # the stored answer, not a second run
    assert "".join(other) == "thinking: once (run 2)"
    assert runs == ["once", "once"]


async def test_the_very_same_request_twice_gets_one_stream(mesh_config: MeshConfig):
    """The same request re-sent on the same reply subject (no message_id): one run, one answer."""
    node, runs = sap_node(mesh_config, "clerk")
    async with node:
        nc = await open_sdk_connection(mesh_config, "raw-caller")
        try:
            inbox = nc.new_inbox()
            got: list[Any] = []
            ended = asyncio.Event()

            async def on_msg(msg: Any) -> None:
                got.append(msg.data)
                if msg.data == b"" and not msg.headers:
                    ended.set()

            await nc.subscribe(inbox, cb=on_msg)
            subject = "agents.prompt.clerk.nxs.default"
            await nc.publish(subject, b"twice", reply=inbox)
            await nc.publish(subject, b"twice", reply=inbox)
            await asyncio.wait_for(ended.wait(), 10)
            await eventually(lambda: got.count(b"") == 2, what="both requests' terminators")
        finally:
            await nc.close()
    responses = [d for d in got if b'"response"' in d]
    assert responses == [b'{"type": "response", "data": "thinking: "}',
                         b'{"type": "response", "data": "twice (run 1)"}']
    assert runs == ["twice"] and got[-1] == b""


async def test_a_refused_prompt_is_a_service_error_and_bad_fields_are_named(mesh_config: MeshConfig):
    node, _ = sap_node(mesh_config, "clerk")
    async with node, sdk_client(mesh_config) as agents:
        [agent] = [a for a in await agents.discover() if a.metadata.get("nxs_node") == node.node_id]
        with pytest.raises(ProtocolError, match="service error 500: not this one"):
            await collect(agent, "refuse")
        with pytest.raises(ProtocolError, match="service error 400: priority must be an integer 0..9"):
            await collect(agent, Envelope(prompt="x", priority=12))


async def test_the_nodes_command_policy_applies_to_prompts(mesh_config: MeshConfig, tmp_path: Path):
    """`prompt` is a command like any other: a policy that does not grant it refuses the prompt before any
    handler runs, and the caller is told why (403)."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[[policy.allow]]\nsigner = "admin"\ncommands = ["*"]\n')
    node, runs = sap_node(mesh_config.replace(policy_file=str(policy)), "clerk")
    async with node, sdk_client(mesh_config) as agents:
        [agent] = [a for a in await agents.discover() if a.metadata.get("nxs_node") == node.node_id]
        with pytest.raises(ProtocolError, match="service error 403: not authorized: command 'prompt' from an "
                                                "unverified sender"):
            await collect(agent, "may I?")
    assert runs == []


async def test_higher_priority_prompts_run_first(mesh_config: MeshConfig):
    """A backlog behind a busy agent runs by priority, as any COMMAND does (the node's window)."""
    node = Node(mesh_config.replace(instance_id=unique_id("node")), NodeOptions(**{**FAST.__dict__, "agents": ("busy",)}))
    order: list[str] = []
    gate = asyncio.Event()

    @node.command("prompt")
    async def prompt(args, ctx):
        if args["prompt"] == "first":
            await gate.wait()
        order.append(args["prompt"])
        return "ok"

    SapFrontDoor.attach(node)
    async with node, sdk_client(mesh_config) as agents:
        [agent] = [a for a in await agents.discover() if a.metadata.get("nxs_node") == node.node_id]
        first = asyncio.create_task(collect(agent, "first"))
        await eventually(lambda: node.inflight == 1, what="the first prompt running")
        low = asyncio.create_task(collect(agent, Envelope(prompt="low", priority=1)))
        high = asyncio.create_task(collect(agent, Envelope(prompt="high", priority=9)))

        async def all_in_hand() -> bool:  # delivered to the node's window, none started yet
            assert node.mesh is not None
            report = await node.mesh.admin.consumer("NXS_COMMAND", durable_name("command", node.node_id))
            return report is not None and report.ack_pending == 3

        await eventually(all_in_hand, what="both prompts waiting in the node's window")
        gate.set()
        await asyncio.gather(first, low, high)
    assert order == ["first", "high", "low"]


async def test_stop_drains_the_running_prompt_and_leaves_the_queued_one_to_the_next_start(mesh_config: MeshConfig):
    cfg = mesh_config.replace(instance_id=unique_id("node"), ack_wait=2.0)  # the left prompt returns in 2 s
    gate = asyncio.Event()

    def build() -> Node:
        node = Node(cfg, NodeOptions(**{**FAST.__dict__, "agents": ("busy",)}))

        @node.command("prompt")
        async def prompt(args, ctx):
            if args["prompt"] == "running":
                await gate.wait()
            return f"{args['prompt']} done by {node.epoch}"

        SapFrontDoor.attach(node)
        return node

    first = build()
    await first.start()
    async with sdk_client(mesh_config) as agents:
        [agent] = [a for a in await agents.discover() if a.metadata.get("nxs_node") == cfg.instance_id]
        running = asyncio.create_task(collect(agent, "running"))
        await eventually(lambda: first.inflight == 1, what="the first prompt running")
        queued = asyncio.create_task(collect(agent, "queued"))

        async def stored() -> bool:  # in the node's window, waiting
            assert first.mesh is not None
            report = await first.mesh.admin.consumer("NXS_COMMAND", durable_name("command", cfg.instance_id))
            return report is not None and report.ack_pending == 2

        await eventually(stored, what="the second prompt stored and waiting")
        stopping = asyncio.create_task(first.stop())
        await eventually(lambda: first.state.name == "DRAINING", what="draining")
        gate.set()
        await stopping
        assert await running == ([f"running done by {first.epoch}"], ["ack"])
        assert not queued.done()  # no terminator was sent for it: its stream waits
        second = build()
        async with second:
            texts, _ = await asyncio.wait_for(queued, 30)
        assert texts == [f"queued done by {second.epoch}"]


async def test_sap_needs_a_prompt_handler_and_attach(mesh_config: MeshConfig):
    node = Node(mesh_config.replace(instance_id=unique_id("node")), FAST)
    with pytest.raises(ConfigError, match="--sap needs a 'prompt' command handler"):
        SapFrontDoor.attach(node)
    node.parts.append(SapFrontDoor())
    with pytest.raises(ConfigError, match=r"goes on a node with SapFrontDoor.attach\(node\)"):
        await node.start()
    await node.stop()
    twins, _ = sap_node(mesh_config, "a_b", "a:b")
    with pytest.raises(ConfigError, match="agents a:b, a_b would share one protocol name \\(a-b\\)"):
        await twins.start()
    await twins.stop()


async def test_the_private_sdk_attributes_we_read_still_exist(mesh_config: MeshConfig):
    """``reply_subject`` reads the SDK's ``PromptStream._request._msg.reply`` (it exposes no reply subject):
    if the SDK renames it, this fails instead of every prompt failing."""
    from synadia_ai.agent_service import AgentService

    nc = await open_sdk_connection(mesh_config, "pin")
    seen: list[str] = []

    async def handler(envelope: Any, stream: Any) -> None:
        seen.append(reply_subject(stream))

    service = AgentService(agent="pin", owner="nxs", session_name=unique_id("s").lower(), nc=nc)
    service.on_prompt(handler)
    await service.start()
    try:
        caller = Agents(nc=nc)
        [agent] = [a for a in await caller.discover() if a.session_name == service.subject.session_name]
        await collect(agent, "hi")
        await caller.close()
    finally:
        await service.stop()
        await nc.close()
    assert len(seen) == 1 and seen[0].startswith("_INBOX.agents.")
