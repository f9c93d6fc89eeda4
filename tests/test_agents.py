"""The agent registry (issue 11 part 1): real servers, real `nxs node run --agent` workers, kill -9."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from node_support import DEAD_AFTER, HB, Worker, alerts_about, run_cli, wait_state

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.client.agents import AgentRecord, AgentState
from nxs_mesh.node.agents import register_agent
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire.errors import AgentNotFound, AgentOrphaned, AgentOwned


async def record_in(mesh: Mesh, agent: str, state: AgentState, owner: str | None = None) -> AgentRecord:
    async def check() -> AgentRecord | None:
        rec = await mesh.agents.get(agent)
        return rec if rec is not None and rec.state is state and owner in (None, rec.owner) else None

    found: AgentRecord = await eventually(check, timeout=20, interval=0.05, what=f"{agent} {state} on {owner}")
    return found


async def stored_subject(mesh: Mesh, stream: str, seq: int | None) -> str:
    assert seq is not None
    rec = await mesh.admin.message(stream, seq)
    assert rec is not None
    return rec.subject


@pytest.mark.timeout(90)
async def test_node_run_agent_registers_and_messages_reach_its_owner(
    mesh: Mesh, nats_server: NatsServer, workers: Callable[..., Worker]
):
    owner = unique_id("w")
    workers(owner, "--agent", "agent:research", "--agent", "agent:notes")
    await wait_state(mesh, owner, "running")
    rec = await record_in(mesh, "agent:research", AgentState.ACTIVE, owner)
    assert (rec.owner, rec.epoch) == (owner, 1)

    ack = await mesh.publish("CHAT", "find papers", to_agent="agent:research")
    assert await stored_subject(mesh, ack.stream, ack.seq) == f"nxs.chat.{owner}.agent:research"

    code, out, err = await run_cli(nats_server.url, "pub", "chat", "--agent", "agent:notes", "take this", "--json")
    assert code == 0, err
    assert json.loads(out)["subject"] == f"nxs.chat.{owner}.agent:notes"
    assert await stored_subject(mesh, ack.stream, json.loads(out)["seq"]) == f"nxs.chat.{owner}.agent:notes"

    code, out, err = await run_cli(nats_server.url, "agents", "--json")
    assert code == 0, err
    listed = {a["agent"]: a for a in json.loads(out)}
    assert set(listed) == {"agent:notes", "agent:research"}
    assert {(a["owner"], a["state"], a["epoch"]) for a in listed.values()} == {(owner, "active", 1)}
    assert all(isinstance(a["age"], float) and a["age"] >= 0 for a in listed.values())
    code, out, err = await run_cli(nats_server.url, "agents")
    assert code == 0 and "agent:research" in out and owner in out and "active" in out, (out, err)


@pytest.mark.timeout(90)
async def test_an_active_agent_on_a_live_node_is_not_stolen(
    mesh: Mesh, nats_server: NatsServer, workers: Callable[..., Worker]
):
    owner, thief = unique_id("w"), unique_id("w")
    workers(owner, "--agent", "agent:research")
    await wait_state(mesh, owner, "running")
    before = await record_in(mesh, "agent:research", AgentState.ACTIVE, owner)

    w2 = workers(thief, "--agent", "agent:research", "--no-doctor")
    assert await w2.wait_exit(30) == 1
    assert f"'agent:research' is active on {owner}" in w2.log() and "not taken" in w2.log()
    with pytest.raises(AgentOwned, match="not taken"):
        await register_agent(mesh, thief, "agent:research")
    after = await mesh.agents.get("agent:research")
    assert after is not None and (after.owner, after.epoch, after.revision) == (owner, 1, before.revision)


@pytest.mark.timeout(120)
async def test_a_killed_workers_agents_are_orphaned_and_its_alert_lists_them(
    mesh: Mesh, nats_server: NatsServer, workers: Callable[..., Worker]
):
    victim, doctor = unique_id("w"), unique_id("w")
    w1 = workers(victim, "--agent", "agent:a", "--agent", "agent:b", "--no-doctor")
    workers(doctor)  # the only doctor: the one alert writer, which runs the orphaning death hook
    await wait_state(mesh, victim, "running")
    await wait_state(mesh, doctor, "running")
    await record_in(mesh, "agent:b", AgentState.ACTIVE, victim)

    w1.kill()  # SIGKILL
    alert = await eventually(lambda: alerts_about(mesh, victim), timeout=30, what="death alert")
    assert alert[0]["event"] == "dead" and alert[0]["orphaned_agents"] == ["agent:a", "agent:b"]
    for agent in ("agent:a", "agent:b"):
        assert (await record_in(mesh, agent, AgentState.ORPHANED, victim)).epoch == 1

    with pytest.raises(AgentOrphaned, match=f"'agent:a' is orphaned: its owner {victim} died"):
        await mesh.publish("CHAT", "anyone?", to_agent="agent:a")
    code, _, err = await run_cli(nats_server.url, "pub", "chat", "--agent", "agent:b", "anyone?")
    assert code == 1 and "'agent:b' is orphaned" in err and "Traceback" not in err

    heir = unique_id("w")
    workers(heir, "--agent", "agent:a", "--no-doctor")
    taken = await record_in(mesh, "agent:a", AgentState.ACTIVE, heir)
    assert taken.epoch == 2  # a new owner: the epoch moves on (it fences the old one)
    ack = await mesh.publish("CHAT", "welcome back", to_agent="agent:a")
    assert await stored_subject(mesh, ack.stream, ack.seq) == f"nxs.chat.{heir}.agent:a"


@pytest.mark.timeout(60)
async def test_library_node_registers_keeps_its_epoch_and_stands_by_on_stop(mesh: Mesh, mesh_config: MeshConfig):
    me = unique_id("lib")
    options = NodeOptions(agents=("agent:lib",), heartbeat_interval=HB, dead_after=DEAD_AFTER, doctor=False,
                          outbox=False)
    async with Node(mesh_config.replace(instance_id=me), options):
        first = await record_in(mesh, "agent:lib", AgentState.ACTIVE, me)
        again = await register_agent(mesh, me, "agent:lib")  # re-registering what it owns: same epoch
        assert (again.owner, again.epoch, again.since) == (me, 1, first.since)
    assert (await record_in(mesh, "agent:lib", AgentState.STANDBY, me)).epoch == 1
    other = await register_agent(mesh, "elsewhere", "agent:lib")  # standby: another node may take it
    assert (other.owner, other.state, other.epoch) == ("elsewhere", AgentState.ACTIVE, 2)


async def test_an_unknown_agent_is_a_clear_error(mesh: Mesh, nats_server: NatsServer):
    with pytest.raises(AgentNotFound, match="agent 'agent:nobody' is not registered") as info:
        await mesh.publish("CHAT", "hello?", to_agent="agent:nobody")
    assert info.value.agent == "agent:nobody"
    code, out, err = await run_cli(nats_server.url, "pub", "chat", "--agent", "agent:nobody", "hello?")
    assert code == 1 and "'agent:nobody' is not registered" in err and "Traceback" not in err
    code, out, err = await run_cli(nats_server.url, "agents", "--json")
    assert code == 0 and json.loads(out) == [], err
    # explicit --to '*' keeps the broadcast to that agent id on every node, registered or not
    code, out, err = await run_cli(nats_server.url, "pub", "chat", "--to", "*", "--agent", "agent:nobody", "hi",
                                   "--json")
    assert code == 0 and json.loads(out)["subject"] == "nxs.chat._all.agent:nobody", err
