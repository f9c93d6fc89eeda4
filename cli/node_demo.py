"""`nxs demo`: three real worker processes, a chat, a command, a task, one node killed, the alert,
the task finished elsewhere, a scatter/gather over the survivors, then an agent handed off between two more nodes; reports the measured
detection and redistribution times."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .common import console
from .demo_gather import demo_gather
from .demo_handoff import demo_handoff
from .node_views import nodes_table

HEARTBEAT, DEAD_AFTER = 0.5, 2.5
NODES = (("demo-node-001", "vps-singapore"), ("demo-node-002", "vps-frankfurt"), ("demo-node-003", "home-lab"))


def say(text: str) -> None:
    console.print(text, highlight=False)


async def _until(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    from nxs_mesh.aio.waiting import wait_until

    return await wait_until(fn, timeout, what, interval)


async def run_demo(url: str | None, *, keep: bool = False) -> int:
    from nxs_mesh.transport.server import NatsServer

    work = Path(tempfile.mkdtemp(prefix="nxs-demo-"))
    server = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        if url is None:
            server = NatsServer(store_dir=work / "store", name="nxs-demo")
            await asyncio.to_thread(server.start)
            url = server.url
            say(f"[bold]1.[/] embedded nats-server (JetStream) at {url}, store {work / 'store'}")
        else:
            say(f"[bold]1.[/] using the mesh at {url}")
        return await _scenario(url, work, procs)
    except Exception as exc:  # noqa: BLE001 - the demo reports any failure and exits 1
        console.print(f"[bold red]demo failed:[/] {exc}")
        for name in procs:
            log = work / f"{name}.log"
            if log.exists():
                console.print(f"[dim]--- {name} log (tail) ---\n{log.read_text()[-1500:]}[/]")
        return 1
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                with contextlib.suppress(Exception):
                    p.wait(5)
        if server is not None:
            await asyncio.to_thread(server.stop)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _spawn(url: str, node: str, location: str, work: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", "from nxs_cli.app import main; main()", "--url", url, "node", "run",
            "--id", node, "--location", location, "--heartbeat", str(HEARTBEAT), "--dead-after", str(DEAD_AFTER),
            "-C", "sleep", "--no-plugins", "--log-level", "WARNING"]
    with (work / f"{node}.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def _scenario(url: str, work: Path, procs: dict[str, subprocess.Popen[bytes]]) -> int:
    from nxs_mesh import Mesh, MeshConfig
    from nxs_mesh.node.checkup import list_nodes
    from nxs_mesh.wire.errors import MeshError

    for node, location in NODES:
        procs[node] = _spawn(url, node, location, work)
    async with Mesh(MeshConfig(servers=(url,), instance_id="demo-cli", agent_id="operator")) as mesh:

        async def state(node: str) -> str | None:
            with contextlib.suppress(MeshError):
                rec = await mesh.last("status", f"nxs.status.{node}")
                if rec is not None and rec.envelope is not None and isinstance(rec.envelope.content, dict):
                    return rec.envelope.content.get("state")
            return None

        for node, _ in NODES:
            await _until(lambda n=node: _is(state(n), "running"), 30, f"{node} running")
        say(f"[bold]2.[/] three workers running (heartbeat {HEARTBEAT}s, dead after {DEAD_AFTER}s)")
        console.print(nodes_table(await list_nodes(mesh)))

        await mesh.publish("CHAT", "hello from the operator", to="demo-node-002", agent="main")
        rec = [r async for r in mesh.tail("chat", instance="demo-node-002", agent="main", last=1)][0]
        say(f"[bold]3.[/] chat stored as NXS_CHAT seq {rec.seq}: {rec.envelope.content!r} -> demo-node-002")

        t0 = time.perf_counter()
        pong = await mesh.request("demo-node-001", "ping", None, timeout=10)
        say(f"[bold]4.[/] command ping -> {pong.source.instance_id}: {(time.perf_counter() - t0) * 1000:.1f} ms round trip")

        victim, detection, redistribution, finished = await _kill_and_move(mesh, procs)
        console.print(nodes_table(await list_nodes(mesh)))
        await demo_gather(url, work, say)  # on the two survivors

        survivors = [n for n, _ in NODES if n != victim]
        for node in survivors:
            procs[node].send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(procs[n].wait, 30) for n in survivors]
        states = [await state(n) for n in survivors]
        say(f"[bold]9.[/] SIGTERM to {', '.join(survivors)}: exit codes {codes}, status {states}")
        ok = codes == [0, 0] and states == ["stopped", "stopped"]
        say("[bold]10.[/] handoff: the user moves an agent from a VPS to the home instance")
        await demo_handoff(url, work, say)
        say(f"\n[bold]measured:[/] detection {detection:.2f}s (timeout {DEAD_AFTER}s + interval {HEARTBEAT}s), "
            f"redistribution {redistribution:.2f}s, task finished {finished:.2f}s after the kill "
            f"(task ack wait 30s)")
        return 0 if ok else 1


async def _kill_and_move(mesh: Any, procs: dict[str, subprocess.Popen[bytes]]) -> tuple[str, float, float, float]:
    """Steps 5-8: a task claimed, its worker killed, the alert, the task finished elsewhere."""
    from nxs_mesh.node.tasks import TaskStore, submit_task

    alerts: dict[str, float] = {}

    async def on_alert(subject: str, data: bytes, headers: Any) -> None:
        alerts.setdefault(subject, time.monotonic())

    await mesh.subscribe("nxs.alert.>", on_alert)
    store = await TaskStore.open(mesh)
    ack, _ = await submit_task(mesh, "sleep", 4.0, ttl=300)
    claim = await _until(lambda: _first(store.get(ack.message_id)), 15, "the task to be claimed")
    victim = claim["node"]
    say(f"[bold]5.[/] task {ack.message_id[:8]} (sleep 4 s) claimed by {victim}")

    t_kill = time.monotonic()
    procs[victim].send_signal(signal.SIGKILL)
    say(f"[bold]6.[/] kill -9 {victim}")
    await _until(lambda: f"nxs.alert.{victim}" in alerts, 30, "the death alert")
    detection = alerts[f"nxs.alert.{victim}"] - t_kill
    say(f"[bold]7.[/] [red]ALERT[/] {victim} dead, {detection:.2f}s after the kill")

    async def moved() -> dict[str, Any] | None:
        rec = await _first(store.get(ack.message_id))
        return rec if rec and rec["node"] != victim else None

    new = await _until(moved, 30, "the task to move", interval=0.02)
    redistribution = time.monotonic() - t_kill
    done = await _until(lambda: _done(store.get(ack.message_id)), 30, "the task to finish")
    finished = time.monotonic() - t_kill
    say(f"[bold]8.[/] task re-claimed by {new['node']} {redistribution:.2f}s after the kill, finished "
        f"there at {finished:.2f}s: {done['result']}")
    return victim, detection, redistribution, finished


async def _is(value: Awaitable[Any], want: Any) -> bool:
    return (await value) == want


async def _first(value: Awaitable[tuple[Any, int]]) -> Any:
    return (await value)[0]


async def _done(value: Awaitable[tuple[Any, int]]) -> Any:
    record = (await value)[0]
    return record if record and record.get("state") == "done" else None
