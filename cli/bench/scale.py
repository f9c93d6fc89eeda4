"""Presence at scale: N nodes embedded several per process, idle traffic, CPU, and a correlated failure.

For each size in ``--nodes`` (default 10,50,150,300), ``scale_worker`` processes of up to
``--per-process`` nodes each (at least four, so that two can die, one of them an elected doctor's) start with the default timings (heartbeat 1 s, dead after 5 s). After a settle, over the
``--idle-window``:

- server msgs/s and bytes/s: ``/varz`` in+out deltas, minus the bench's own monitor connection;
- per-node received B/s: ``/connz`` out_bytes of each node's connection (what the server sent it);
  the median is the figure, the max (the elected doctors, which receive the heartbeats) is noted;
- CPU of the worker processes (sum) and of the server, from /proc, in % of one core;
- max heartbeat gap: the longest silence between two heartbeats of one live node, as the bench's
  monitor subscription hears them (window and failure phase).

Then one process without a lease is killed with ``kill -9`` (all its nodes at once): first and last
ALERT about its nodes (target: timeout + interval = 6 s) and how many ALERT publishes the mesh made (a
plain subscription sees duplicates the stream drops); then the same for a process holding a lease (the
other elected doctor alerts). Alerts about any other node are false alerts (must be 0). The other
workers then get SIGTERM and must exit 0 before the next size starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from nxs_cli.bench.report import Row, skipped
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import median

from nxs_mesh.aio.waiting import wait_until
from nxs_mesh.node.lease import open_doctors_bucket
from nxs_mesh.wire.errors import MeshError

__all__ = ["bench_scale"]

HEARTBEAT, DEAD_AFTER = 1.0, 5.0
TARGET = DEAD_AFTER + HEARTBEAT
BUDGET = 1024  # bytes/s per node
_WORKER = "from nxs_cli.bench.scale_worker import main; main()"


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


async def _server_view(monitor: str, limit: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    varz = await asyncio.to_thread(_get, f"{monitor}/varz")
    connz = await asyncio.to_thread(_get, f"{monitor}/connz?limit={limit}")
    return varz, {str(c.get("name", "")): c for c in connz.get("connections") or []}


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Monitor:
    """The bench's own ears: every heartbeat (for gaps) and every alert publish."""

    last_beat: dict[str, float] = field(default_factory=dict)
    gaps: dict[str, float] = field(default_factory=dict)
    alerts: list[tuple[float, str, str]] = field(default_factory=list)  # (time, node, event)

    async def on_beat(self, msg: Any) -> None:
        node, now = msg.subject.rsplit(".", 1)[-1], time.monotonic()
        if node in self.last_beat:
            self.gaps[node] = max(self.gaps.get(node, 0.0), now - self.last_beat[node])
        self.last_beat[node] = now

    async def on_alert(self, msg: Any) -> None:
        try:
            content = json.loads(msg.data)["payload"]["content"]
            self.alerts.append((time.monotonic(), str(content["node"]), str(content["event"])))
        except (ValueError, KeyError, TypeError):
            pass


@dataclass
class _Proc:
    proc: asyncio.subprocess.Process
    nodes: list[str]

    async def ready(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"scale worker {self.nodes[0]}.. exited ({self.proc.returncode}) before ready")


async def _spawn(session: BenchSession, n: int, per_process: int) -> list[_Proc]:
    count = max(4, math.ceil(n / per_process))
    sizes = [n // count + (1 if i < n % count else 0) for i in range(count)]
    procs = []
    for i, size in enumerate(sizes):
        prefix = session.unique(f"s{n}p{i}")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, "--url", session.url, "--prefix", prefix, "--count", str(size),
            "--heartbeat", str(HEARTBEAT), "--dead-after", str(DEAD_AFTER),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        procs.append(_Proc(proc, [f"{prefix}-{j}" for j in range(size)]))
    return procs


async def _stop(procs: list[_Proc], timeout: float = 60.0) -> list[int | None]:
    """SIGTERM and wait; a worker still running after ``timeout`` is killed (its code then is None)."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.proc.terminate()
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(await asyncio.wait_for(p.proc.wait(), timeout))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.proc.kill()
            await p.proc.wait()
            codes.append(None)
    return codes


async def _holders(session: BenchSession) -> set[str]:
    bucket = await open_doctors_bucket(await session.mesh())
    out = set()
    for i in range(4):
        entry = await bucket.get(f"doctor.{i}")
        if entry is not None and entry.value:
            out.add(str(json.loads(entry.value).get("node", "")))
    return out


@dataclass
class _Idle:
    msgs: float
    bytes: float
    received: list[float]
    sent: list[float]
    cpu_workers: float
    cpu_server: float | None


async def _measure_idle(session: BenchSession, procs: list[_Proc], me: str) -> _Idle:
    assert session.monitor_url
    nodes = [n for p in procs for n in p.nodes]
    pids = [p.proc.pid for p in procs]
    server_pid = session.server.pid if session.server is not None else None
    limit = len(nodes) + 64
    v0, c0 = await _server_view(session.monitor_url, limit)
    cpu0, cpus0, t0 = sum(map(_cpu_seconds, pids)), _cpu_seconds(server_pid) if server_pid else 0.0, time.monotonic()
    await asyncio.sleep(session.options.idle_window)  # sleep-ok: the measurement window itself
    v1, c1 = await _server_view(session.monitor_url, limit)
    cpu1, cpus1, w = sum(map(_cpu_seconds, pids)), _cpu_seconds(server_pid) if server_pid else 0.0, time.monotonic() - t0

    def delta(key: str, name: str) -> float:
        return float(c1.get(name, {}).get(key, 0) - c0.get(name, {}).get(key, 0))

    mine = [name for name in c1 if name.startswith(me)]
    own_msgs = sum(delta("in_msgs", n) + delta("out_msgs", n) for n in mine)
    own_bytes = sum(delta("in_bytes", n) + delta("out_bytes", n) for n in mine)
    names = {n: next((c for c in c1 if c.startswith(f"nxs:{n}:")), "") for n in nodes}
    return _Idle(
        msgs=(v1["in_msgs"] + v1["out_msgs"] - v0["in_msgs"] - v0["out_msgs"] - own_msgs) / w,
        bytes=(v1["in_bytes"] + v1["out_bytes"] - v0["in_bytes"] - v0["out_bytes"] - own_bytes) / w,
        received=[delta("out_bytes", c) / w for c in names.values() if c],
        sent=[delta("in_bytes", c) / w for c in names.values() if c],
        cpu_workers=100 * (cpu1 - cpu0) / w,
        cpu_server=100 * (cpus1 - cpus0) / w if server_pid else None,
    )


@dataclass
class _Kill:
    what: str
    dead: set[str]
    at: float
    until: float = math.inf  # the next kill (alerts after it belong to that one)


async def _kill(mon: _Monitor, victim: _Proc, what: str) -> _Kill:
    """kill -9 one process, wait for an alert about each of its nodes (or give up), plus a grace."""
    kill = _Kill(what, set(victim.nodes), time.monotonic())
    victim.proc.kill()
    await victim.proc.wait()
    with contextlib.suppress(MeshError):
        await wait_until(lambda: kill.dead <= {node for t, node, ev in mon.alerts if ev == "dead" and t >= kill.at},
                         4 * TARGET + 20, "alerts about every killed node")
    await asyncio.sleep(2 * HEARTBEAT)  # sleep-ok: late (false or duplicate) alerts still count
    return kill


async def _one_size(session: BenchSession, n: int) -> list[Row]:
    raw = await session.raw()
    mon = _Monitor()
    await raw.subscribe("nxs.heartbeat.>", cb=mon.on_beat)
    await raw.subscribe("nxs.alert.>", cb=mon.on_alert)
    t_start = time.monotonic()
    procs = await _spawn(session, n, session.options.scale_per_process)
    try:
        await asyncio.gather(*(p.ready(60 + n / 2) for p in procs))
        started = time.monotonic() - t_start
        await asyncio.sleep(max(3.0, session.options.settle))  # sleep-ok: let start-up traffic pass
        mon.gaps.clear()
        idle = await _measure_idle(session, procs, f"bench-raw-{session.run_id}")
        held = await _holders(session)
        plain = next((p for p in procs if not set(p.nodes) & held), procs[-1])
        doctor = next((p for p in procs if p is not plain and set(p.nodes) & held), None)
        kills = [await _kill(mon, plain, "kill -9 -> last alert")]
        if doctor is not None:
            kills[0].until = time.monotonic()
            kills.append(await _kill(mon, doctor, "kill -9 of a doctor -> last alert"))
        codes = await _stop([p for p in procs if p is not plain and p is not doctor])
    except BaseException:
        await _stop(procs, timeout=10)
        raise
    return _rows(n, [len(p.nodes) for p in procs], started, idle, mon, kills, codes)


def _kill_row(name: str, kill: _Kill, mon: _Monitor) -> Row:
    deaths = [(t, node) for t, node, ev in mon.alerts if ev == "dead" and kill.at <= t < kill.until and node in kill.dead]
    firsts = {node: min(t for t, x in deaths if x == node) - kill.at for _, node in deaths}
    target = f"<= {TARGET:g} s"
    if len(firsts) < len(kill.dead):
        return Row(f"{name}: {kill.what}", "s", None, target=target, met=False,
                   note=f"only {len(firsts)} of {len(kill.dead)} killed nodes alerted")
    last = max(firsts.values())
    return Row(f"{name}: {kill.what}", "s", last, target=target, met=last <= TARGET,
               note=f"first {min(firsts.values()):.2f} s; {len(kill.dead)} nodes of one process; "
                    f"{len(deaths)} alert publishes")


def _rows(n: int, sizes: list[int], started: float, idle: _Idle, mon: _Monitor, kills: list[_Kill],
          codes: list[int | None]) -> list[Row]:
    name = f"scale {n}"
    dead = set().union(*(k.dead for k in kills))
    false = len({node for t, node, ev in mon.alerts if ev == "dead" and t >= kills[0].at} - dead)
    gap = max((g for node, g in mon.gaps.items() if node not in dead), default=0.0)
    rx = median(idle.received) if idle.received else 0.0
    over = sum(r > BUDGET for r in idle.received)
    clean = sum(c == 0 for c in codes)
    return [
        Row(f"{name}: server", "msg/s", idle.msgs,
            note=f"{idle.bytes:,.0f} B/s in+out; {len(sizes)} processes of {min(sizes)}-{max(sizes)} nodes, "
                 f"all running {started:.1f} s after spawning"),
        Row(f"{name}: per-node received", "B/s", rx, target=f"<= {BUDGET} B/s", met=rx <= BUDGET,
            note=f"median of {len(idle.received)}; max {max(idle.received, default=0):,.0f} B/s, {over} "
                 f"above budget (the elected doctors); sent median {median(idle.sent) if idle.sent else 0:,.0f} B/s"),
        Row(f"{name}: CPU workers", "%", idle.cpu_workers,
            note="server " + ("-" if idle.cpu_server is None else f"{idle.cpu_server:.0f}%") + " (of one core)"),
        *(_kill_row(name, k, mon) for k in kills),
        Row(f"{name}: false alerts", "count", float(false), target="0", met=false == 0),
        Row(f"{name}: max heartbeat gap", "s", gap,
            note=f"live nodes, idle window and failures; {clean} of {len(codes)} workers exited 0 on SIGTERM"),
    ]


async def bench_scale(session: BenchSession) -> list[Row]:
    if not session.monitor_url:
        return [skipped("scale", "-", "no server monitor URL")]
    rows: list[Row] = []
    for n in session.options.scale_nodes:
        rows.extend(await _one_size(session, n))
        await session.close_clients()
    return rows
