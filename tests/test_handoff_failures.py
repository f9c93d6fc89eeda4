"""Handoff failure at each step: a real worker stopped at a named step (NXS_PAUSE_AT) and killed with
kill -9 there. Never two active owners, never none without an alert, no message lost or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from handoff_support import AGENT, chat, contents, history, kill9, paused, record_is, start_pausing
from node_support import Worker, alerts_about, wait_state

from nxs_mesh import Mesh
from nxs_mesh.client.agents import AgentState
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.wire.errors import AgentOrphaned, HandoffTimeout


@pytest.mark.timeout(120)
async def test_target_dies_before_commit_the_agent_stays_on_its_owner_with_its_messages(
    mesh: Mesh, workers: Callable[..., Worker]
):
    a, b = unique_id("a"), unique_id("b")
    wa = workers(a, "--agent", AGENT)  # A runs the only doctor
    wb = start_pausing(workers, b, "loaded", "--no-doctor")
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")
    await chat(mesh, "m1")
    assert await contents(wa, AGENT, 1) == ["m1"]

    moving = asyncio.ensure_future(mesh.handoff(AGENT, to=b, timeout=5))  # 5 s a step: ample on a loaded machine
    await paused(wb, "loaded")  # B loaded the context; it has not committed
    await chat(mesh, "during-1", "during-2")
    kill9(wb)
    with pytest.raises(HandoffTimeout, match="rolled back") as info:
        await moving
    assert info.value.step == "commit"
    await record_is(mesh, AGENT, a, AgentState.ACTIVE, 1)  # rolled back: A, active, the same epoch
    assert await contents(wa, AGENT, 3) == ["m1", "during-1", "during-2"]  # held, then A's again, once
    await chat(mesh, "after")
    assert await contents(wa, AGENT, 4) == ["m1", "during-1", "during-2", "after"]
    [alert] = await eventually(lambda: alerts_about(mesh, b), timeout=20, what="B's death alert")
    assert "orphaned_agents" not in alert  # B never owned it


@pytest.mark.timeout(120)
async def test_owner_dies_after_commit_the_target_owns_the_agent(mesh: Mesh, workers: Callable[..., Worker]):
    a, b = unique_id("a"), unique_id("b")
    wa = start_pausing(workers, a, "release", "--agent", AGENT, "--no-doctor")
    wb = workers(b)  # B runs the only doctor
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")
    await chat(mesh, "m1", "m2")
    assert await contents(wa, AGENT, 2) == ["m1", "m2"]

    moving = asyncio.ensure_future(mesh.handoff(AGENT, to=b, timeout=5))  # 5 s a step: ample on a loaded machine
    await paused(wa, "release")  # committed on B; A was told to stand by and dies there
    kill9(wa)
    outcome = await moving
    assert (outcome.to_node, outcome.epoch, outcome.released) == (b, 2, False)
    [alert] = await eventually(lambda: alerts_about(mesh, a), timeout=20, what="A's death alert")
    assert "orphaned_agents" not in alert  # A owned nothing any more
    await record_is(mesh, AGENT, b, AgentState.ACTIVE, 2)
    await chat(mesh, "after")
    assert await contents(wb, AGENT, 3) == ["m1", "m2", "after"]
    assert [h["content"] for h in history(wa, AGENT)] == ["m1", "m2"]


@pytest.mark.timeout(120)
async def test_owner_dies_before_commit_the_agent_is_orphaned_and_the_alert_says_so(
    mesh: Mesh, workers: Callable[..., Worker]
):
    a, b = unique_id("a"), unique_id("b")
    wa = start_pausing(workers, a, "prepared", "--agent", AGENT, "--no-doctor")
    workers(b)  # B runs the only doctor
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")

    moving = asyncio.ensure_future(mesh.handoff(AGENT, to=b, timeout=5))  # 5 s a step: ample on a loaded machine
    await paused(wa, "prepared")  # A moved the record to handing-off and stored the bundle; then dies
    kill9(wa)
    with pytest.raises(HandoffTimeout) as info:
        await moving
    assert info.value.step == "prepare"
    [alert] = await eventually(lambda: alerts_about(mesh, a), timeout=20, what="A's death alert")
    assert alert["event"] == "dead" and alert["orphaned_agents"] == [AGENT]
    await record_is(mesh, AGENT, a, AgentState.ORPHANED, 1)  # not B's: B never committed
    with pytest.raises(AgentOrphaned):
        await chat(mesh, "anyone?")


@pytest.mark.timeout(120)
async def test_the_caller_vanishes_mid_handoff_the_owner_rolls_back_by_itself(
    mesh: Mesh, workers: Callable[..., Worker]
):
    a, b = unique_id("a"), unique_id("b")
    wa = workers(a, "--agent", AGENT, "--no-doctor")
    wb = start_pausing(workers, b, "loaded", "--no-doctor")
    await wait_state(mesh, a, "running")
    await wait_state(mesh, b, "running")

    moving = asyncio.ensure_future(mesh.handoff(AGENT, to=b, timeout=60, hold=2))
    await paused(wb, "loaded")
    moving.cancel()  # the caller is gone (Ctrl-C, a crash): nobody will commit or abort
    with pytest.raises(asyncio.CancelledError):
        await moving
    await record_is(mesh, AGENT, a, AgentState.HANDING_OFF, 1)
    await record_is(mesh, AGENT, a, AgentState.ACTIVE, 1)  # A's hold ran out: back to active, by A itself
    assert "no commit within 2s; rolling back" in wa.log()
    kill9(wb)
    await chat(mesh, "still yours")
    assert await contents(wa, AGENT, 1) == ["still yours"]
