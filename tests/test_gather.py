"""Scatter/gather (issue 11 part 3): subtasks over real worker processes, in input order, each told once;
a worker killed mid-way, a deadline, a quorum, no capacity, and `nxs task map`."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from node_support import results_for, run_cli, wait_state

from nxs_mesh import ConfigError, Mesh, NoCapacity
from nxs_mesh.client.gather import Gathered, GatherProgress
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gather.py"


async def _start(mesh: Mesh, workers, n: int, *extra: str) -> list:
    ws = [workers(unique_id(f"w{i}"), "-C", "sleep", *extra) for i in range(n)]
    for w in ws:
        await wait_state(mesh, w.node_id, "running")
    return ws


def _told_once(results: list, gathered: Gathered) -> None:
    """Exactly one RESULT per subtask on the gather's subject, and it says what the gather returned."""
    by_task = collections.Counter(r.payload.metadata["task_id"] for r in results)
    assert by_task == collections.Counter(s.task_id for s in gathered), by_task
    states = {r.payload.metadata["task_id"]: r.payload.metadata["state"] for r in results}
    assert states == {s.task_id: s.state for s in gathered}


@pytest.mark.timeout(90)
async def test_gather_over_three_workers_in_input_order_each_told_once(mesh: Mesh, workers):
    ws = await _start(mesh, workers, 3)
    seen: list[GatherProgress] = []
    payloads = [{"seconds": 0.3, "i": i} for i in range(12)]
    got = await mesh.gather("sleep", payloads, deadline=60, on_progress=seen.append)
    assert [s.index for s in got] == list(range(12)) and got.quorum_met and got.completed == 12
    assert all(s.ok and s.result == {"slept": 0.3, "node": s.node} for s in got)
    nodes = {s.node for s in got}
    assert nodes <= {w.node_id for w in ws} and len(nodes) >= 2  # spread by the work queue
    assert seen and seen[-1].finished == 12 and sum(r["done"] for r in seen[-1].per_node.values()) == 12
    _told_once(await results_for(mesh, got.gather_id), got)
    assert repr(got) == f"<Gathered {got.gather_id} [12 completed; quorum met]>"


@pytest.mark.timeout(120)
async def test_a_worker_killed_mid_gather_has_its_subtasks_completed_elsewhere(mesh: Mesh, workers):
    ws = {w.node_id: w for w in await _start(mesh, workers, 3)}
    killed: list[str] = []

    def on_progress(p: GatherProgress) -> None:
        busy = [n for n, row in p.per_node.items() if row["running"] and n in ws]
        if busy and not killed:
            killed.append(busy[0])
            ws[busy[0]].signal(signal.SIGKILL)  # kill -9 while it holds a subtask

    got = await mesh.gather("sleep", [1.0] * 9, deadline=90, on_progress=on_progress)
    assert killed and got.completed == 9, got
    assert killed[0] not in {s.node for s in got}  # what it held was completed by the others
    statuses = [await mesh.task_status(s.task_id) for s in got]
    reruns = [st for st in statuses if st["delivery"] >= 2]
    assert reruns and all(st["node"] != killed[0] for st in reruns)
    _told_once(await results_for(mesh, got.gather_id), got)


@pytest.mark.timeout(90)
async def test_the_deadline_returns_partial_results_and_cancels_leftovers_on_their_workers(mesh: Mesh, workers):
    ws = await _start(mesh, workers, 2)
    payloads = [0, 0, 40, 40, 40]  # two quick ones, then one long one for each worker, and one nobody takes
    got = await mesh.gather("sleep", payloads, deadline=4)
    assert [s.state for s in got] == ["completed", "completed", "cancelled", "cancelled", "expired"], got
    assert not got.quorum_met and "deadline" in (got[4].error or "")
    for w in ws:  # the long handlers were cancelled on their workers, not left running
        await eventually(lambda w=w: "cancelled while running" in w.log(), timeout=10, what=f"{w.node_id} cancelled")
    _told_once(await results_for(mesh, got.gather_id), got)
    assert [(await mesh.task_status(s.task_id))["state"] for s in got] == [s.state for s in got]


@pytest.mark.timeout(90)
async def test_a_quorum_returns_early_and_cancels_the_rest(mesh: Mesh, workers):
    await _start(mesh, workers, 2)
    got = await asyncio.wait_for(mesh.gather("sleep", [0, 0, 0, 40], quorum=0.75, deadline=60), 30)
    assert got.quorum_met and got.counts() == {"completed": 3, "cancelled": 1}, got
    assert got[3].state == "cancelled" and "quorum" in (got[3].error or "")
    _told_once(await results_for(mesh, got.gather_id), got)


async def test_no_live_node_with_the_capability_fails_fast(mesh: Mesh):
    with pytest.raises(NoCapacity, match="no live node has capability 'sleep'"):
        await asyncio.wait_for(mesh.gather("sleep", [1, 2]), 5)
    with pytest.raises(ConfigError, match="quorum"):
        await mesh.gather("sleep", [1], quorum=0)


@pytest.mark.timeout(90)
async def test_cli_task_map(mesh: Mesh, workers, nats_server: NatsServer, tmp_path: Path):
    await _start(mesh, workers, 2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('0.1\n{"seconds": 0.1}\n{oops\n')
    code, out, err = await run_cli(nats_server.url, "task", "map", "sleep", str(bad))
    assert code == 1 and "bad.jsonl line 3: not JSON" in err and "Traceback" not in err
    good = tmp_path / "in.jsonl"
    good.write_text("".join(f'{{"seconds": 0.1, "i": {i}}}\n' for i in range(6)) + "\n")
    code, out, err = await run_cli(nats_server.url, "task", "map", "sleep", str(good), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [s["index"] for s in doc["subtasks"]] == list(range(6)) and doc["counts"] == {"completed": 6}
    code, out, err = await run_cli(nats_server.url, "task", "map", "sleep", str(good), "--quorum", "0.5")
    assert code == 0 and "quorum 0.5 met" in out and "/6 completed" in out, out + err  # stops at quorum


@pytest.mark.timeout(90)
async def test_demo_gather_on_running_nodes(mesh: Mesh, workers, nats_server: NatsServer, tmp_path: Path):
    from nxs_cli.demo_gather import demo_gather

    await _start(mesh, workers, 2)
    said: list[str] = []
    await demo_gather(nats_server.url, tmp_path, said.append)
    assert len(said) == 3 and "2 live node(s) can sleep" in said[0]
    assert "9 completed" in said[1] and "#0 completed, #1 completed, #2 cancelled" in said[2], said


@pytest.mark.timeout(90)
async def test_the_readme_gather_example_runs(mesh: Mesh, workers, nats_server: NatsServer, tmp_path: Path):
    await _start(mesh, workers, 1)
    example = EXAMPLE
    env = {**os.environ, "NXS_URL": nats_server.url, "NXS_DATA_DIR": str(tmp_path / "data")}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(example), env=env, cwd=tmp_path,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = out.decode().splitlines()
    assert proc.returncode == 0, err.decode()
    assert [line.split()[1] for line in lines[:4]] == ["completed", "completed", "completed", "cancelled"], lines
    assert lines[4:] == ["quorum met: True", "cancelled"]
