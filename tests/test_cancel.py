"""Calls that always end, first step: a task cancelled before it is claimed never runs, and its caller is
told once (issue 11 part 4)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from node_support import Worker, results_for, run_cli, wait_state

from nxs_mesh import Mesh, RemoteError
from nxs_mesh.node.task_states import cancel_task, task_status
from nxs_mesh.node.tasks import TaskStore, submit_task
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire.errors import TaskStateError


@pytest.mark.timeout(60)
async def test_cancel_before_claim_wakes_the_caller_once_and_never_runs(
    mesh: Mesh, nats_server: NatsServer, tmp_path: Path
):
    cap = "sleep"  # the worker's built-in capability; no worker runs yet, so the task stays unclaimed
    task_id = str(uuid.uuid4())
    waiter = asyncio.ensure_future(submit_task(mesh, cap, 0.0, wait=True, timeout=30, task_id=task_id))
    store = await TaskStore.open(mesh)
    await eventually(lambda: _stored(mesh, task_id), timeout=10, what="task queued")
    assert (await task_status(mesh, task_id, store))["state"] == "submitted"

    cancelled = await cancel_task(mesh, task_id, store)
    assert cancelled["state"] == "cancelled" and cancelled["by"] == mesh.config.instance_id
    with pytest.raises(RemoteError, match="cancelled"):
        await asyncio.wait_for(waiter, 10)  # the waiting caller is woken by the terminal event
    with pytest.raises(TaskStateError, match="already ended: cancelled"):
        await cancel_task(mesh, task_id, store)  # the transition happens once

    worker = Worker(nats_server.url, unique_id("w"), tmp_path, "-C", cap).start()
    try:
        await wait_state(mesh, worker.node_id, "running")
        ack, after = await submit_task(mesh, cap, 0.0, wait=True, timeout=20)  # queued behind the cancelled one
        assert after is not None and after.payload.metadata["ok"] is True
        await eventually(lambda: "cancelled before it ran" in worker.log(), timeout=10, what="acked unrun")
    finally:
        worker.kill()
    status = await task_status(mesh, task_id, store)
    assert status["state"] == "cancelled"  # the worker never claimed it
    results = await results_for(mesh, task_id)
    assert [r.payload.metadata.get("state") for r in results] == ["cancelled"]
    assert results[0].payload.metadata["ok"] is False


async def _stored(mesh: Mesh, task_id: str) -> bool:
    ids = [r.envelope.id async for r in mesh.tail("task", filters=["nxs.task.>"]) if r.envelope is not None]
    return task_id in ids


@pytest.mark.timeout(60)
async def test_cli_task_status_and_cancel(nats_server: NatsServer):
    code, out, err = await run_cli(nats_server.url, "task", "submit", "sleep", "0", "--json")
    assert code == 0, err
    task_id = json.loads(out)["task_id"]
    code, out, _ = await run_cli(nats_server.url, "task", "status", task_id, "--json")
    assert code == 0 and json.loads(out)["state"] == "submitted"
    code, out, err = await run_cli(nats_server.url, "task", "cancel", task_id)
    assert code == 0 and f"task {task_id} cancelled" in out, err
    code, out, _ = await run_cli(nats_server.url, "task", "status", task_id, "--json")
    assert code == 0 and json.loads(out)["state"] == "cancelled"
    code, out, _ = await run_cli(nats_server.url, "task", "status", task_id)
    assert code == 0 and "state: cancelled" in out
    code, out, err = await run_cli(nats_server.url, "task", "cancel", task_id)
    assert code == 1 and "already ended: cancelled" in err and "Traceback" not in err
