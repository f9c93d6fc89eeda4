"""Calls that always end (issue 11 part 4): every task ends once, completed, failed, cancelled, expired or
orphaned, and its caller is told once (one RESULT on its subject); a command whose node dies ends orphaned."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path

import pytest
from node_support import DEAD_AFTER, HB, Worker, alerts_about, results_for, run_cli, wait_state

from nxs_mesh import CallEnded, Mesh, RemoteError
from nxs_mesh.node.doctor import Doctor
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.provision import provision
from nxs_mesh.node.task_states import cancel_task, task_status
from nxs_mesh.node.tasks import TaskStore, submit_task
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.testing.secure import SecureCluster
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


async def _claimed(mesh: Mesh, task_id: str) -> dict:
    async def check() -> dict | None:
        st = await mesh.task_status(task_id)
        return st if st["state"] == "claimed" else None

    return await eventually(check, timeout=20, what=f"task {task_id} claimed")


@pytest.mark.timeout(90)
async def test_cancel_of_a_running_task_cancels_its_handler_and_tells_the_caller_once(mesh: Mesh, workers):
    w = workers(unique_id("w"), "-C", "sleep")
    await wait_state(mesh, w.node_id, "running")
    task_id = str(uuid.uuid4())
    waiter = asyncio.ensure_future(submit_task(mesh, "sleep", 60, wait=True, timeout=80, task_id=task_id))
    claim = await _claimed(mesh, task_id)
    assert claim["node"] == w.node_id and claim["submitter"] == mesh.config.instance_id

    cancelled = await mesh.cancel(task_id)
    assert cancelled["state"] == "cancelled" and cancelled["worker"] == w.node_id
    with pytest.raises(CallEnded) as ended:
        await asyncio.wait_for(waiter, 10)
    assert ended.value.state == "cancelled" and ended.value.task_id == task_id
    await eventually(lambda: "cancelled while running" in w.log(), timeout=10, what="handler cancelled")
    # One task at a time on this worker: a second one done within seconds proves the 60 s handler stopped.
    _, after = await submit_task(mesh, "sleep", 0, wait=True, timeout=20)
    assert after is not None and after.payload.metadata["state"] == "completed"
    results = await results_for(mesh, task_id)
    assert [r.payload.metadata["state"] for r in results] == ["cancelled"]
    assert (await mesh.task_status(task_id))["state"] == "cancelled"
    with pytest.raises(TaskStateError, match="already ended: cancelled"):
        await mesh.cancel(task_id)


@pytest.mark.timeout(90)
async def test_a_task_whose_worker_dies_on_its_last_delivery_ends_orphaned(
    mesh: Mesh, workers, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NXS_MAX_DELIVER", "1")  # the workers' task consumer: no second delivery
    ws = {i: workers(i, "-C", "sleep") for i in (unique_id("a"), unique_id("b"))}
    for i in ws:
        await wait_state(mesh, i, "running")
    task_id = str(uuid.uuid4())
    waiter = asyncio.ensure_future(submit_task(mesh, "sleep", 60, wait=True, timeout=80, task_id=task_id))
    holder = (await _claimed(mesh, task_id))["node"]
    ws[holder].signal(signal.SIGKILL)

    with pytest.raises(CallEnded) as ended:
        await asyncio.wait_for(waiter, 30)  # the survivor's Doctor: dead after 1 s, then the hook
    assert ended.value.state == "orphaned"
    status = await mesh.task_status(task_id)
    assert status["state"] == "orphaned" and status["worker"] == holder
    assert [r.payload.metadata["state"] for r in await results_for(mesh, task_id)] == ["orphaned"]
    # Ended by the Doctor's death hook (then its alert lists it) or by the survivor that got the
    # redelivery past max_deliver, whichever CAS won: never run again, never told twice.
    survivor = next(w for i, w in ws.items() if i != holder)
    async def death_alerts() -> list[dict]:
        return [a for a in await alerts_about(mesh, holder) if a["event"] == "dead"]

    deaths = await eventually(death_alerts, timeout=15, what="the death alert")  # may follow the RESULT
    assert len(deaths) == 1
    assert (deaths[0].get("orphaned_tasks") == [task_id]) != (f"task {task_id}: delivery 2 is past" in survivor.log())


@pytest.mark.timeout(60)
async def test_an_unclaimed_task_past_its_ttl_ends_expired(mesh: Mesh):
    task_id = str(uuid.uuid4())
    with pytest.raises(CallEnded) as ended:  # no worker: nobody takes it within its ttl
        await submit_task(mesh, "sleep", 0, ttl=1, wait=True, timeout=20, task_id=task_id)
    assert ended.value.state == "expired"
    assert (await mesh.task_status(task_id))["state"] == "expired"
    assert [r.payload.metadata["state"] for r in await results_for(mesh, task_id)] == ["expired"]


@pytest.mark.timeout(60)
async def test_a_task_failing_on_its_last_attempt_ends_failed_once(mesh: Mesh, workers, monkeypatch):
    monkeypatch.setenv("NXS_MAX_DELIVER", "1")
    w = workers(unique_id("w"), "-C", "sleep")
    await wait_state(mesh, w.node_id, "running")
    task_id = str(uuid.uuid4())
    with pytest.raises(CallEnded, match="sleep wants a number") as ended:
        await submit_task(mesh, "sleep", "soon", wait=True, timeout=20, task_id=task_id)
    assert ended.value.state == "failed" and ended.value.node == w.node_id
    assert (await mesh.task_status(task_id))["state"] == "failed"
    assert [r.payload.metadata["state"] for r in await results_for(mesh, task_id)] == ["failed"]


@pytest.mark.timeout(60)
async def test_a_command_to_a_node_that_dies_ends_orphaned_not_at_its_timeout(mesh: Mesh, workers):
    doctor = await Doctor(mesh, dead_after=DEAD_AFTER, interval=HB).start()
    try:
        w = workers(unique_id("w"))
        await wait_state(mesh, w.node_id, "running")
        await eventually(lambda: w.node_id in doctor.peers, timeout=10, what="the doctor hears it")
        call = asyncio.ensure_future(mesh.request(w.node_id, "sleep", 50, timeout=50))
        w.signal(signal.SIGKILL)
        with pytest.raises(CallEnded, match="died before answering") as ended:
            await asyncio.wait_for(call, 20)  # long before the 50 s timeout
        assert ended.value.state == "orphaned" and ended.value.node == w.node_id
    finally:
        await doctor.stop()


@pytest.mark.timeout(120)
async def test_secure_only_the_submitter_or_the_admin_may_cancel(tmp_path: Path):
    """With a trust file: a third node's cancel is refused by `mesh.cancel`, and a `cancelled` record it
    writes itself is ignored by the worker (the task runs); the submitter's and the admin's cancels work,
    with the permissions deploy renders (the nudge is a COMMAND, a subject every node may send)."""
    with SecureCluster(tmp_path / "secure") as sc:
        async with Mesh(sc.config("admin")) as admin, Mesh(sc.config("n1")) as n1, Mesh(sc.config("n2")) as n2:
            await provision(admin, ["n1", "n2", "n3"])
            forged_id = str(uuid.uuid4())
            await submit_task(n1, "sleep", 0, task_id=forged_id)  # no worker yet: it waits unclaimed
            with pytest.raises(TaskStateError, match="submitted by n1: only it or the admin may cancel"):
                await n2.cancel(forged_id)
            forged = {"state": "cancelled", "node": "n2", "by": "n2", "at": time.time()}
            assert await (await n2.task_store()).cas(forged_id, forged, 0) is not None  # n2 may write the bucket

            node3 = await Node(sc.config("n3"), NodeOptions(heartbeat_interval=0.5, doctor=False,
                                                             capabilities=("sleep",))).start()
            try:
                async def ran() -> bool:
                    return (await n1.task_status(forged_id))["state"] == "completed"

                await eventually(ran, timeout=20, what="the task ran despite n2's cancelled record")
                for canceller in (n1, admin):
                    task_id = str(uuid.uuid4())
                    waiter = asyncio.ensure_future(submit_task(n1, "sleep", 60, wait=True, timeout=80,
                                                               task_id=task_id))
                    assert (await _claimed(n1, task_id))["node"] == "n3"
                    assert (await canceller.cancel(task_id))["state"] == "cancelled"
                    with pytest.raises(CallEnded) as ended:
                        await asyncio.wait_for(waiter, 15)
                    assert ended.value.state == "cancelled"
                    await eventually(lambda: node3.tasks is not None and not node3.tasks.claims, timeout=10,
                                     what="the handler on n3 stopped")
                assert node3.tasks is not None and node3.tasks.cancelled == 2
            finally:
                await node3.stop()
