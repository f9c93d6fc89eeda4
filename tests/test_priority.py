"""Priority is enforced in the worker (issue 10, item 1): with a backlog queued behind a busy worker,
higher priorities run first, for commands (a fetch window) and for tasks (per-priority lanes)."""

from __future__ import annotations

import asyncio
from typing import Any

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.tasks import submit_task
from nxs_mesh.testing import eventually, unique_id

LOW, HIGH = 1, 9
N_LOW, N_HIGH = 50, 5


def _options(**kw: Any) -> NodeOptions:
    return NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False, **kw)


def _assert_high_first(seen: list[tuple[int, int]]) -> None:
    """The busy worker saw the whole backlog: every HIGH runs before every LOW still waiting, and each
    priority keeps its sending order."""
    assert len(seen) == N_LOW + N_HIGH, seen
    prios = [p for p, _ in seen]
    assert prios == [HIGH] * N_HIGH + [LOW] * N_LOW, prios
    assert [i for p, i in seen if p == HIGH] == list(range(N_HIGH))
    assert [i for p, i in seen if p == LOW] == list(range(N_LOW))


async def test_busy_worker_runs_queued_high_priority_commands_first(mesh: Mesh, mesh_config: MeshConfig):
    node = Node(mesh_config.replace(instance_id=unique_id("prio")), _options())
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[tuple[int, int]] = []

    @node.command("hold")
    async def hold(args: Any) -> None:
        started.set()
        await release.wait()

    @node.command("record")
    async def record(args: Any, ctx: Any) -> None:
        seen.append((ctx.envelope.priority, args))

    async with node:
        nid = node.node_id
        await mesh.publish("COMMAND", {"command": "hold"}, to=nid, priority=LOW)
        await eventually(started.is_set, timeout=10, what="the long command runs")
        for i in range(N_LOW):
            await mesh.publish("COMMAND", {"command": "record", "args": i}, to=nid, priority=LOW)
        for i in range(N_HIGH):
            await mesh.publish("COMMAND", {"command": "record", "args": i}, to=nid, priority=HIGH)
        durable = node.consumers[0].spec.durable

        async def worker_holds_backlog() -> bool:
            # The server has handed the whole backlog to the busy worker (nothing left undelivered).
            report = await mesh.admin.consumer("NXS_COMMAND", durable)
            return report is not None and report.pending == 0 and report.ack_pending == 1 + N_LOW + N_HIGH

        await eventually(worker_holds_backlog, timeout=10, what="the backlog is queued at the worker")
        release.set()
        await eventually(lambda: len(seen) == N_LOW + N_HIGH, timeout=30, what="backlog handled")
    _assert_high_first(seen)


async def test_busy_task_worker_takes_queued_high_priority_tasks_first(mesh: Mesh, mesh_config: MeshConfig):
    cap = unique_id("prio")
    node = Node(mesh_config.replace(instance_id=unique_id("worker")), _options(capabilities=(cap,)))
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[tuple[int, int]] = []

    @node.task(cap)
    async def work(payload: Any, ctx: Any) -> None:
        if payload == "hold":
            started.set()
            await release.wait()
            return
        seen.append((ctx.envelope.priority, payload))

    async with node:
        await submit_task(mesh, cap, "hold", priority=LOW)
        await eventually(started.is_set, timeout=10, what="the long task runs")
        for i in range(N_LOW):
            await submit_task(mesh, cap, i, priority=LOW)
        for i in range(N_HIGH):
            await submit_task(mesh, cap, i, priority=HIGH)

        async def all_queued() -> bool:
            report = await mesh.admin.stream("NXS_TASK")
            return report is not None and report.messages == 1 + N_LOW + N_HIGH

        await eventually(all_queued, timeout=10, what="the backlog is stored")
        release.set()
        await eventually(lambda: len(seen) == N_LOW + N_HIGH, timeout=30, what="backlog handled")
    _assert_high_first(seen)


async def test_an_existing_task_consumer_becomes_the_default_lane(mesh: Mesh, mesh_config: MeshConfig):
    """A worker from before the lanes left ``task-<capability>`` filtering every priority; it keeps its
    name as the default priority's lane and what was queued meanwhile runs (on a work queue the other
    lanes could not exist next to the old filter)."""
    cap = unique_id("mig")

    async def older_worker(env: Any) -> None:
        raise AssertionError("not started")

    old = await mesh.consume("task", older_worker, durable=f"task-{cap}", filters=[f"nxs.task.{cap}.>"])
    await old.stop()
    for p in (LOW, HIGH):
        await submit_task(mesh, cap, p, priority=p)
    node = Node(mesh_config.replace(instance_id=unique_id("worker")), _options(capabilities=(cap,)))
    seen: list[int] = []

    @node.task(cap)
    async def work(payload: Any) -> None:
        seen.append(payload)

    async with node:
        await eventually(lambda: sorted(seen) == [LOW, HIGH], timeout=15, what="queued tasks handled")
        info = await mesh.link.js.consumer_info("NXS_TASK", f"task-{cap}")
        assert info.config.filter_subject == f"nxs.task.{cap}.p{LOW}"
        assert {c.spec.durable for c in node.consumers} == {f"task-{cap}", f"command-{node.node_id}"}


async def test_a_command_that_expires_while_waiting_in_the_window_is_not_run(mesh: Mesh, mesh_config: MeshConfig):
    node = Node(mesh_config.replace(instance_id=unique_id("prio")), _options())
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    @node.command("hold")
    async def hold(args: Any) -> None:
        started.set()
        await release.wait()

    @node.command("record")
    async def record(args: Any) -> None:
        seen.append(args)

    async with node:
        nid = node.node_id
        await mesh.publish("COMMAND", {"command": "hold"}, to=nid)
        await eventually(started.is_set, timeout=10, what="the long command runs")
        await mesh.publish("COMMAND", {"command": "record", "args": "short-lived"}, to=nid, ttl=1, priority=HIGH)
        await mesh.publish("COMMAND", {"command": "record", "args": "kept"}, to=nid, ttl=120)
        await asyncio.sleep(1.2)  # sleep-ok: letting the 1 s ttl pass while the command waits its turn
        release.set()
        await eventually(lambda: seen == ["kept"], timeout=10, what="only the live command ran")
        assert node.consumers[0].stats.expired == 1
