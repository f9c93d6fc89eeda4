"""Request/reply through the gateway with real `nxs node run` workers: commands (200, 404 for a node
nobody knows, 502 for a remote error, 504 for a timeout), tasks (queued, waited, idempotent, status),
nodes, and the Doctor's alert for a killed worker."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from gateway_support import Gate, assert_json_error, running_gateway
from node_support import Worker, wait_state

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.testing import eventually, unique_id

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def gate(mesh: Mesh, mesh_config: MeshConfig) -> AsyncIterator[Gate]:
    async with running_gateway(mesh_config.replace(instance_id="gw")) as g:
        yield g


@pytest.fixture
async def node(mesh: Mesh, workers: Callable[..., Worker]) -> str:
    node_id = unique_id("w")
    workers(node_id, "-C", "echo", "-C", "sleep")
    await wait_state(mesh, node_id, "running")
    return node_id


async def test_a_command_is_answered_and_failures_have_their_status(gate: Gate, node: str):
    r = await gate.client.post(f"/v1/nodes/{node}/commands/echo", json={"x": [1, 2]})
    assert r.status_code == 200, r.text
    assert r.json()["node"] == node and r.json()["result"] == {"x": [1, 2]}
    assert (await gate.client.post(f"/v1/nodes/{node}/commands/ping")).status_code == 200  # no body: no args
    assert_json_error(await gate.client.post("/v1/nodes/nobody-here/commands/ping"), 404, "node")
    remote = assert_json_error(await gate.client.post(f"/v1/nodes/{node}/commands/no-such-command"), 502, None)
    assert remote["node"] == node
    slow = await gate.client.post(f"/v1/nodes/{node}/commands/sleep", params={"timeout": 0.5}, json=5)
    assert "0.5" in assert_json_error(slow, 504, None)["error"]


async def test_nodes_lists_the_running_worker(gate: Gate, node: str):
    nodes = (await gate.client.get("/v1/nodes")).json()["nodes"]
    mine = next(n for n in nodes if n["node"] == node)
    assert mine["state"] == "running" and "echo" in mine["capabilities"] and mine["heartbeat_age"] is not None


async def test_a_task_is_queued_then_done_and_its_status_says_so(gate: Gate, node: str):
    r = await gate.client.post("/v1/tasks", json={"capability": "echo", "payload": {"n": 7}})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    assert r.headers["location"] == f"/v1/tasks/{task_id}" and r.json()["stream"] == "NXS_TASK"

    async def done() -> dict | None:
        body = (await gate.client.get(f"/v1/tasks/{task_id}")).json()
        return body if body["state"] == "completed" else None

    status = await eventually(done, timeout=20, what="the task completed")
    assert status["result"] == {"n": 7} and status["node"] == node
    waited = await gate.client.post("/v1/tasks", json={"capability": "echo", "payload": "w", "wait": True, "timeout": 20})
    assert waited.status_code == 200 and waited.json()["result"] == "w" and waited.json()["node"] == node
    unknown = (await gate.client.get(f"/v1/tasks/{uuid.uuid4()}")).json()
    assert unknown["state"] == "submitted" and "result" not in unknown  # the queue cannot say whether it was queued
    cancelled = await gate.client.post(f"/v1/tasks/{task_id}/cancel")  # it already ended: nothing to cancel
    assert cancelled.status_code == 409 and cancelled.json()["field"] is None, cancelled.text
    assert (await gate.client.post("/v1/tasks/not-a-uuid/cancel")).json()["field"] == "task_id"


async def test_an_idempotency_key_submits_a_task_once(gate: Gate, mesh: Mesh):
    key = unique_id("job")
    body = {"capability": "nobody-has-this", "payload": 1}
    first = await gate.client.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
    again = await gate.client.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"] and again.json()["duplicate"] is True
    assert again.json()["seq"] == first.json()["seq"]
    queued = [r async for r in mesh.tail("task", filters=["nxs.task.nobody-has-this.>"])]
    assert [r.envelope.id for r in queued] == [first.json()["task_id"]]


async def test_a_task_nobody_finishes_in_time_is_504(gate: Gate):
    r = await gate.client.post("/v1/tasks", json={"capability": "nobody-has-this", "wait": True, "timeout": 0.5})
    assert_json_error(r, 504, None)


async def test_a_killed_worker_shows_dead_and_its_alert_is_listed(gate: Gate, mesh: Mesh,
                                                                   workers: Callable[..., Worker]):
    victim, watcher = unique_id("victim"), unique_id("watcher")
    procs = {n: workers(n) for n in (victim, watcher)}
    for n in procs:
        await wait_state(mesh, n, "running")
    procs[victim].signal(signal.SIGKILL)

    async def alerted() -> list:
        body = (await gate.client.get("/v1/alerts", params={"node": victim})).json()
        return [a for a in body["alerts"] if a.get("event") == "dead"]

    dead = await eventually(alerted, timeout=30, interval=0.2, what="the death alert through the gateway")
    assert len(dead) == 1 and dead[0]["node"] == victim and dead[0]["seq"] > 0
    nodes = {n["node"]: n["state"] for n in (await gate.client.get("/v1/nodes")).json()["nodes"]}
    assert nodes[victim] == "dead" and nodes[watcher] == "running"
