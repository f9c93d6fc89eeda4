"""Agent handoff (issue 11 part 2): real servers, real `nxs node run` workers, the library and the CLI.

Failure at each step (kill -9 at a named step) is in test_handoff_failures.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from handoff_support import AGENT, chat, contents, history, paused, record_is, resume, start_pausing
from node_support import Worker, run_cli, wait_state

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.client.agents import EPOCH_KEY, AgentState
from nxs_mesh.client.handoff import KIND, VERSION, HandoffOutcome
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire.envelope import Source, new_envelope
from nxs_mesh.wire.errors import HandoffRefused, HandoffTimeout


@pytest.mark.timeout(120)
async def test_handoff_moves_the_agent_with_its_context_and_the_messages_sent_meanwhile(
    mesh: Mesh, mesh_config: MeshConfig, workers: Callable[..., Worker]
):
    a, b = unique_id("a"), unique_id("b")
    wa = start_pausing(workers, a, "prepared", "--agent", AGENT, "--no-doctor")
    wb = workers(b, "--no-doctor")
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")
    await chat(mesh, "m1", "m2", "m3")
    assert await contents(wa, AGENT, 3) == ["m1", "m2", "m3"]

    steps: list[str] = []
    moving = asyncio.ensure_future(mesh.handoff(AGENT, to=b, timeout=20, on_step=steps.append))
    await paused(wa, "prepared")  # A stopped taking the agent's messages; the record says handing-off
    await record_is(mesh, AGENT, a, AgentState.HANDING_OFF, 1)
    await chat(mesh, "during-1", "during-2")  # held by the agent's durable, not lost, not taken by A
    resume(wa)
    outcome: HandoffOutcome = await moving

    assert (outcome.from_node, outcome.to_node, outcome.epoch, outcome.released) == (a, b, 2, True)
    assert outcome.ready == "I'm ready. Continuing from message 3: 'm3'."
    assert outcome.drained == 2 and outcome.bundle["size"] > 0 and len(outcome.bundle["digest"]) > 10
    assert steps == ["offer", "prepare", "commit", "release"] and set(outcome.steps) == set(steps)
    await record_is(mesh, AGENT, b, AgentState.ACTIVE, 2)
    # B: the history it was handed, then what arrived meanwhile, in order, once; A got nothing more.
    assert await contents(wb, AGENT, 5) == ["m1", "m2", "m3", "during-1", "during-2"]
    await chat(mesh, "after")
    assert await contents(wb, AGENT, 6) == ["m1", "m2", "m3", "during-1", "during-2", "after"]
    assert [h["content"] for h in history(wa, AGENT)] == ["m1", "m2", "m3"]

    # B announced "ready" as the agent, stamped with its epoch, on nxs.sync._all.<agent>
    ready = [r.envelope async for r in mesh.tail("sync", filters=[f"nxs.sync._all.{AGENT}"])]
    assert [(e.content["text"], e.payload.metadata[EPOCH_KEY], e.source.instance_id) for e in ready if e] == [
        (outcome.ready, 2, b)]
    assert ready[0] is not None and not await mesh.agents.stale(ready[0])


@pytest.mark.timeout(120)
async def test_a_stale_owner_is_fenced(mesh: Mesh, mesh_config: MeshConfig, workers: Callable[..., Worker]):
    a, b = unique_id("a"), unique_id("b")
    workers(a, "--agent", AGENT, "--no-doctor")
    wb = workers(b, "--no-doctor")
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")
    assert (await mesh.handoff(AGENT, to=b, timeout=20)).epoch == 2

    async with Mesh(mesh_config.replace(instance_id=a, agent_id=AGENT)) as old_owner:  # A, still at epoch 1
        stale = new_envelope("CHAT", "I am still the agent", source=Source(a, AGENT, ""), to=b, agent=AGENT,
                             metadata={EPOCH_KEY: 1})
        await old_owner.send(stale)
        assert await mesh.agents.stale(stale)
    current = new_envelope("CHAT", "x", source=Source(b, AGENT, ""), metadata={EPOCH_KEY: 2})
    assert not await mesh.agents.stale(current)

    async def dead_lettered() -> list[str]:
        return [r.headers.get("Nxs-Dlq-Reason", "") async for r in mesh.tail("dlq")]

    [reason] = await eventually(dead_lettered, timeout=20, what="the stale owner's message dead-lettered")
    assert "fenced" in reason and "epoch 1" in reason, reason
    await chat(mesh, "to the real one")
    assert await contents(wb, AGENT, 1) == ["to the real one"]


@pytest.mark.timeout(120)
async def test_cli_handoff_with_a_context_file_and_clear_errors(
    mesh: Mesh, nats_server: NatsServer, workers: Callable[..., Worker], tmp_path: Path
):
    a, b = unique_id("a"), unique_id("b")
    workers(a, "--agent", AGENT, "--no-doctor")
    wb = workers(b, "--no-doctor")
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")
    ctx = tmp_path / "ctx.json"
    ctx.write_text(json.dumps({"history": [{"content": "from the file"}], "memory": {"topic": "papers"}}))

    code, out, err = await run_cli(nats_server.url, "handoff", AGENT, "--to", b, "--context", str(ctx), "--json")
    assert code == 0, err
    got = json.loads(out)
    assert (got["from"], got["to"], got["epoch"]) == (a, b, 2) and got["ready"].startswith("I'm ready. ")
    assert await contents(wb, AGENT, 1) == ["from the file"]

    code, out, err = await run_cli(nats_server.url, "handoff", AGENT, "--to", a, "--need", "gpu")
    assert code == 1 and f"{a} lacks capability gpu" in err and "Traceback" not in err, err
    code, out, err = await run_cli(nats_server.url, "handoff", AGENT, "--to", a, "--context", "nowhere.json")
    assert code == 1 and "--context nowhere.json: no such file" in err and "Traceback" not in err, err
    code, out, err = await run_cli(nats_server.url, "handoff", "agent:nobody", "--to", a)
    assert code == 1 and "'agent:nobody' is not registered" in err and "Traceback" not in err, err
    code, out, err = await run_cli(nats_server.url, "handoff", AGENT, "--to", b)
    assert code == 1 and f"already lives on {b}" in err, err
    code, out, err = await run_cli(nats_server.url, "handoff", AGENT, "--to", a)  # and back, human output
    assert code == 0 and "I'm ready." in out and "epoch 3" in out, (out, err)
    await record_is(mesh, AGENT, a, AgentState.ACTIVE, 3)


@pytest.mark.timeout(120)
async def test_a_refused_offer_leaves_the_owner_unchanged(mesh: Mesh, workers: Callable[..., Worker]):
    a, b = unique_id("a"), unique_id("b")
    wa = workers(a, "--agent", AGENT, "--no-doctor")
    workers(b, "--agent", "agent:other", "--max-agents", "1", "--no-doctor")
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")
    before = await record_is(mesh, AGENT, a, AgentState.ACTIVE, 1)

    with pytest.raises(HandoffRefused, match=f"{b} is at capacity: 1 of at most 1 agents") as info:
        await mesh.handoff(AGENT, to=b, timeout=10)
    assert info.value.step == "offer" and info.value.agent == AGENT
    with pytest.raises(HandoffRefused, match="lacks capability gpu"):
        await mesh.handoff(AGENT, to=b, needs=("gpu",), timeout=10)
    with pytest.raises(HandoffTimeout, match="no nobody-home's answer to handoff offer within 2") as late:
        await mesh.handoff(AGENT, to="nobody-home", timeout=2)  # no such node: nobody answers
    assert late.value.step == "offer"
    # another protocol version is refused too (an offer as a newer caller would send it)
    _, answer = await mesh.call("SYNC", {"kind": KIND["offer"], "agent": AGENT, "id": "x", "epoch": 1, "from": a,
                                         "to": b, "needs": [], "version": VERSION + 1},
                                correlation_id=unique_id("c"), timeout=10, waiting_for="offer answer", to=b,
                                agent=AGENT)
    assert answer.content == {"accept": False, "why": f"protocol version {VERSION + 1}; {b} speaks {VERSION}"}
    after = await mesh.agents.get(AGENT)
    assert after is not None and after.revision == before.revision  # not one write
    await chat(mesh, "still here?")
    assert await contents(wa, AGENT, 1) == ["still here?"]


@pytest.mark.timeout(120)
async def test_demo_handoff_shows_the_switch(nats_server: NatsServer, tmp_path: Path):
    from nxs_cli.demo_handoff import demo_handoff

    said: list[str] = []
    await demo_handoff(nats_server.url, tmp_path, said.append)
    text = "\n".join(said)
    assert "switch to home instance" in text and "handoff step: commit" in text, text
    assert "demo-home: [green]I'm ready. Continuing from message 3: 'draft an email to Ana'.[/]" in text, text
    assert "4 messages there, 3 left on demo-vps" in text, text


@pytest.mark.timeout(90)
def test_readme_handoff_example_runs(nats_server: NatsServer, tmp_path: Path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NXS_")}, "NXS_URL": nats_server.url}
    r = subprocess.run([sys.executable, str(root / "examples" / "handoff.py")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "I'm ready. Continuing from 'summarise the top three'.",
        "epoch 2, steps ['commit', 'offer', 'prepare', 'release', 'upload']",
        "agent:research now lives on example-home (active)",
    ], r.stdout
