"""Three hosts in network namespaces (100.64.x.y each): the cluster forms over those addresses; one host
is cut off (link down) and healed. Its publishes wait in the outbox and drain afterwards, the majority
keeps storing, the Doctor on the majority reports it dead and then recovered, nothing is lost or
duplicated. Needs root and iproute2; skipped with the reason elsewhere."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nxs_mesh import Mesh, MeshConfig, MeshError
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.testing.netns import NetnsHost, NetnsLab, netns_unavailable, run_in_netns
from nxs_mesh.transport.server import NatsServer

pytestmark = pytest.mark.netns

_REASON = netns_unavailable()
CLIENT, MONITOR, ROUTE = 4222, 8222, 6222


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    if _REASON:
        pytest.skip(_REASON)
    lab = NetnsLab(3)
    lab.start()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def servers(lab: NetnsLab, tmp_path: Path) -> Iterator[list[NatsServer]]:
    cluster = unique_id("ns")
    started = []
    try:
        for h in lab.hosts:
            srv = NatsServer(
                host=h.address, port=CLIENT, monitor_port=MONITOR, store_dir=tmp_path / h.name, name=h.name,
                cluster_name=cluster, cluster_port=ROUTE, netns=h.ns, sync_interval="always",
                routes=[f"nats://{o.address}:{ROUTE}" for o in lab.hosts if o is not h],
            )
            started.append(srv)
            srv.start()
        yield started
    finally:
        for srv in started:
            srv.stop()


def _servers_for(lab: NetnsLab, h: NetnsHost) -> str:
    """Local server first, the other members next (the production order)."""
    return ",".join([f"nats://{h.address}:{CLIENT}"] +
                    [f"nats://{o.address}:{CLIENT}" for o in lab.hosts if o is not h])


class Proc:
    """A child process inside a host, its stdout lines collected as JSON where they parse."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc, self.name = proc, name
        self.lines: list[dict[str, Any]] = []
        self.text: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            self.text.append(line)
            try:
                self.lines.append({"mono": time.monotonic(), **json.loads(line)})
            except ValueError:
                pass

    def count(self, key: str, value: Any = True, since: float = 0.0) -> int:
        return sum(1 for d in self.lines if d.get(key) == value and d["mono"] >= since)

    def first(self, since: float, **match: Any) -> float | None:
        for d in self.lines:
            if d["mono"] >= since and all(d.get(k) == v for k, v in match.items()):
                return float(d["mono"])
        return None

    async def stop(self, sig: int | None = None, timeout: float = 40.0) -> None:
        if self.proc.returncode is None:
            if sig is None:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"stop\n")
                await self.proc.stdin.drain()
            else:
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.reader


async def _lead_on(mesh: Mesh, stream: str, server: str) -> bool:
    info = await mesh.admin.stream(stream)
    if info is not None and info.leader == server:
        return True
    req = json.dumps({"placement": {"preferred": server}}).encode()
    with contextlib.suppress(Exception):
        await mesh.link.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", req, timeout=5)
    return False


def _logs(directory: Path, prefix: str) -> str:
    return " | ".join(f"{f.name}: {f.read_text()[-600:]}" for f in sorted(directory.glob(f"{prefix}-*.log")))


async def _quiet(counts: Any) -> Any:
    try:
        return await counts
    except MeshError:
        return None


async def _alert_counts(observer: Any, node: str) -> collections.Counter[str]:
    return collections.Counter([rec.envelope.payload.content["event"]  # type: ignore[index]
                                async for rec in observer.tail("alert", instance=node)])


async def _settled(read: Any, *, accept: Any = lambda c: True, what: str, timeout: float = 30.0) -> Any:
    """Read until two reads in a row agree (and ``accept`` them); a read failing with a MeshError (an
    election still running after the heal) just counts as no answer yet."""
    seen: list[Any] = []

    async def once() -> Any:
        value = await _quiet(read())
        if value is None:
            return None
        seen.append(value)
        # (wrapped: an empty answer is a valid settled answer, and eventually() wants something truthy)
        return (value,) if len(seen) > 1 and seen[-1] == seen[-2] and accept(value) else None

    return (await eventually(once, timeout=timeout, interval=0.5, what=what))[0]


def _state(doctor: Any, node: str) -> str | None:
    return next((p["state"] for p in doctor.snapshot() if p["node"] == node), None)


async def _spawn(host: NetnsHost, argv: list[str], name: str, log_dir: Path) -> Proc:
    with open(log_dir / f"{name}.log", "wb") as log:  # noqa: ASYNC230 - a local log file; the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(
            *host.exec_argv(*argv), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return Proc(proc, name)


@pytest.mark.timeout(150)
def test_partition_outbox_drains_and_doctor_sees_it(lab: NetnsLab, servers: list[NatsServer], tmp_path: Path) -> None:
    h1, h2, h3 = lab.hosts
    to = unique_id("part")
    nxs = str(Path(sys.executable).parent / "nxs")
    figures: dict[str, Any] = {}

    async def scenario() -> None:  # runs inside h2 (the majority side)
        t0 = time.monotonic()
        for srv in servers:  # /healthz over the 100.64 addresses: the cluster formed across hosts
            await asyncio.to_thread(srv.wait_healthy, 40)
        figures["cluster_formed_s"] = round(time.monotonic() - t0, 2)
        # With an outbox: an ALERT published while a stream elects a new leader waits instead of being lost.
        observer = await Mesh(MeshConfig(servers=tuple(_servers_for(lab, h2).split(",")),
                                         instance_id=unique_id("obs"), replicas=3),
                              outbox=tmp_path / "outbox-observer.sqlite").connect()
        info = await observer.admin.stream("NXS_CHAT")
        assert info is not None and info.replicas == 3 and len(info.replicas_current) == 2
        events: list[tuple[float, str, str]] = []
        doctor = None
        workers: list[Proc] = []
        agents: list[Proc] = []
        try:
            try:
                from nxs_mesh.node.doctor import Doctor
            except ImportError:  # pragma: no cover - the worker/Doctor land separately
                Doctor = None  # type: ignore[assignment,misc]  # noqa: N806
            if Doctor is not None:
                doctor = await Doctor(observer, dead_after=3.0, interval=0.5, redistribute=False,
                                      on_event=lambda e: events.append((time.monotonic(), e["event"], e["node"]))
                                      ).start()
                for h in lab.hosts:
                    workers.append(await _spawn(h, [
                        nxs, "--url", _servers_for(lab, h), "node", "run", "--id", f"{to}-{h.name}",
                        "--heartbeat", "0.5", "--dead-after", "3", "--no-plugins", "--log-level", "WARNING",
                    ], f"worker-{h.name}", tmp_path))
                await eventually(lambda: sum(p["state"] == "alive" for p in doctor.snapshot()
                                             if p["node"].startswith(to)) == 3, timeout=40,
                                 what="the Doctor hears all three workers")
            # The hard case: the streams we check have their leaders on the host we cut off.
            for stream in ("NXS_CHAT", "NXS_ALERT"):
                await eventually(lambda st=stream: _lead_on(observer, st, h1.name), timeout=30,  # type: ignore[misc]
                                 what=f"{stream} leader moved to h1")
            for h in lab.hosts:
                agents.append(await _spawn(h, [
                    sys.executable, "-m", "nxs_mesh.testing.netns", "agent", "--servers", _servers_for(lab, h),
                    "--id", f"{to}-{h.name}-agent", "--to", to, "--outbox", str(tmp_path / f"outbox-{h.name}.sqlite"),
                    "--interval", "0.05",
                ], f"agent-{h.name}", tmp_path))
            a1, a2, a3 = agents
            await eventually(lambda: all(a.count("queued", False) >= 10 for a in agents), timeout=40,
                             what="every agent stores directly before the cut")

            transitions: list[tuple[float, str]] = []

            async def watch() -> None:  # when the Doctor's judgement of h1 changes (timing only)
                last = None
                while doctor is not None:
                    state = _state(doctor, f"{to}-h1")
                    if state != last:
                        transitions.append((time.monotonic(), str(state)))
                        last = state
                    await asyncio.sleep(0.02)  # sleep-ok: sampling for a figure, not synchronisation

            watcher = asyncio.create_task(watch())
            # -- cut h1 off ------------------------------------------------------------------------------
            lab.cut(h1)
            t_cut = time.monotonic()
            await eventually(lambda: a1.count("queued", True, t_cut) >= 20, timeout=30, what="h1's publishes queue")
            await eventually(lambda: a2.count("queued", False, t_cut) >= 20 and a3.count("queued", False, t_cut) >= 20,
                             timeout=40, what="the majority keeps storing")
            figures["h1_first_queued_after_cut_s"] = round((a1.first(t_cut, queued=True) or t_cut) - t_cut, 2)
            figures["majority_first_direct_after_cut_s"] = round(
                max(a.first(t_cut, queued=False) or t_cut for a in (a2, a3)) - t_cut, 2)
            if doctor is not None:
                await eventually(lambda: _state(doctor, f"{to}-h1") == "dead", timeout=30,
                                 what="the Doctor on the majority reports h1 dead")
                t_dead = next(t for t, st in transitions if st == "dead" and t >= t_cut)
                figures["doctor_dead_after_cut_s"] = round(t_dead - t_cut, 2)
                assert [_state(doctor, f"{to}-{h.name}") for h in (h2, h3)] == ["alive", "alive"]

                async def dead_alert_stored() -> bool:
                    counts = await _quiet(_alert_counts(observer, f"{to}-h1"))
                    return bool(counts and counts["dead"] >= 1)

                # "Reports it dead" = the ALERT is stored (its stream may first elect a leader away from h1).
                await eventually(dead_alert_stored, timeout=40, interval=0.2, what="the death alert is stored")
                figures["dead_alert_stored_after_cut_s"] = round(time.monotonic() - t_cut, 2)
            queued_during_cut = a1.count("queued", True, t_cut)

            # -- heal ------------------------------------------------------------------------------------
            lab.heal(h1)
            t_heal = time.monotonic()
            await eventually(lambda: a1.first(t_heal, outbox=0) is not None, timeout=60, what="h1's outbox drains")
            figures["outbox_drained_after_heal_s"] = round((a1.first(t_heal, outbox=0) or t_heal) - t_heal, 2)
            figures["outbox_drain_s"] = next((d.get("drain_s") for d in reversed(a1.lines) if d.get("drain_s")), None)
            await eventually(lambda: a1.count("queued", False, t_heal) >= 5, timeout=30, what="h1 stores directly again")
            if doctor is not None:
                await eventually(lambda: _state(doctor, f"{to}-h1") == "alive", timeout=30,
                                 what=f"the Doctor reports h1 recovered; {transitions}")
                t_back = next(t for t, st in transitions if st == "alive" and t >= t_heal)
                figures["doctor_recovered_after_heal_s"] = round(t_back - t_heal, 2)
            watcher.cancel()
            figures["h1_queued_during_cut"] = queued_during_cut
        finally:
            for a in agents:
                await a.stop()
            for w in workers:
                await w.stop(signal.SIGTERM, timeout=20)
            if doctor is not None:
                await doctor.stop()

        # -- the queue check ------------------------------------------------------------------------------
        for a in agents:
            assert any(d.get("done") and d.get("drained") for d in a.lines), (a.name, a.text[-5:])
        acknowledged = [d["id"] for a in agents for d in a.lines if "id" in d]
        unacked = sum(1 for a in agents for d in a.lines if "error" in d)

        async def chat_ids() -> collections.Counter[str]:
            return collections.Counter([rec.envelope.id async for rec in observer.tail("chat", instance=to)])

        # Right after the heal, JetStream may still be electing (503 "temporarily unavailable") and a read
        # may come from a replica that is catching up: read until two reads in a row agree.
        found = await _settled(chat_ids, what="the chat stream reads the same twice")
        missing = [m for m in acknowledged if found[m] == 0]
        dupes = {m: c for m, c in found.items() if c > 1}
        if doctor is not None:
            assert observer.flusher is not None and await observer.flusher.wait_empty(30)

            def alerts() -> Any:
                return _alert_counts(observer, f"{to}-h1")

            # Three doctors watched (two workers and ours): one ALERT per event mesh-wide.
            counts = await _settled(alerts, accept=lambda c: c["dead"] >= 1 and c["recovered"] >= 1,
                                    what="the alerts about h1 settle")
            figures["alerts_about_h1"] = dict(counts)
            assert figures["alerts_about_h1"] == {"dead": 1, "recovered": 1}
            # The cut-off host's own doctor saw everyone else "die": none of that may reach the mesh.
            for other in (f"{to}-h2", f"{to}-h3"):
                assert await _settled(lambda o=other: _alert_counts(observer, o), what=f"alerts about {other}") == {}
            figures["doctor_events_seen"] = [ev for _, ev, n in events if n == f"{to}-h1"]
        await observer.close()
        figures.update(acknowledged=len(acknowledged), not_acknowledged=unacked, found=sum(found.values()),
                       distinct=len(found), missing=len(missing), duplicated=len(dupes),
                       queued_total=sum(a.count("queued", True) for a in agents))
        assert len(set(acknowledged)) == len(acknowledged)
        assert not missing, f"{len(missing)} acknowledged messages missing"
        assert not dupes, f"duplicates in the stream: {dupes}"
        assert len(found) - len(acknowledged) <= unacked

    try:
        run_in_netns(h2.ns, scenario, timeout=140)
    except AssertionError as exc:  # the children's own words help more than a timeout
        raise AssertionError(f"{exc}\nlogs: {_logs(tmp_path, 'worker')} {_logs(tmp_path, 'agent')}") from None
    print(f"\nNETNS partition figures: {json.dumps(figures)}")


def test_lab_cleans_up_after_itself() -> None:
    if _REASON:
        pytest.skip(_REASON)
    with NetnsLab(2) as lab:
        names = [lab.hub, *(h.ns for h in lab.hosts)]
        listed = os.popen("ip netns list").read()
        assert all(n in listed for n in names)
    listed = os.popen("ip netns list").read()
    assert not any(n in listed for n in names)
