"""Read-only views of the mesh: who is there (``list_nodes``) and a one-shot health check (``check_mesh``).

Unlike the Doctor, which times heartbeats live with its own clock, these look at what the streams
hold: the last STATUS and HEARTBEAT of every node, aged by the server's stored time. That is what a
CLI that just connected can know; on one host (or NTP-synced hosts) it is accurate to well under
a second.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from nxs_mesh.client.admin import STREAMS
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.node.security_checkup import security_checks
from nxs_mesh.wire.contract import DLQ_STREAM
from nxs_mesh.wire.errors import MeshError

__all__ = ["Check", "Health", "HealthReport", "NodeView", "check_mesh", "list_nodes"]

_DEFAULT_DEAD_AFTER = 5.0


@dataclass(frozen=True)
class NodeView:
    node: str
    location: str
    state: str  # the node's own state, or "suspect"/"dead" when its heartbeats stopped
    heartbeat_age: float | None
    load: float | None
    version: str
    server: str
    epoch: str = ""
    inflight: int = 0
    uptime: float | None = None
    capabilities: tuple[str, ...] = ()
    status: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["capabilities"] = list(self.capabilities)
        return out


async def list_nodes(mesh: Mesh, *, dead_after: float | None = None) -> list[NodeView]:
    """Every node that ever published a status or heartbeat, with its derived liveness."""
    statuses: dict[str, dict[str, Any]] = {}
    beats: dict[str, tuple[datetime, dict[str, Any], str]] = {}
    async for rec in mesh.tail("status"):
        if rec.envelope is not None and isinstance(rec.envelope.content, dict):
            statuses[rec.envelope.source.instance_id] = rec.envelope.content
    async for rec in mesh.tail("heartbeat"):
        env = rec.envelope
        if env is not None and isinstance(env.content, dict):
            beats[env.source.instance_id] = (rec.stored_at, env.content, env.source.location)
    now = datetime.now(UTC)
    views = []
    for node in sorted(set(statuses) | set(beats)):
        st = statuses.get(node, {})
        beat = beats.get(node)
        age = max(0.0, (now - beat[0]).total_seconds()) if beat else None
        state = str(st.get("state") or (beat[1].get("state") if beat else "unknown"))
        if beat and beat[1].get("epoch") != st.get("epoch") and beat[1].get("state"):
            state = str(beat[1]["state"])  # the heartbeat is from a newer incarnation than the status
        interval = float(st.get("heartbeat_interval") or (beat[1].get("interval") if beat else 1.0) or 1.0)
        limit = dead_after or float(st.get("dead_after") or _DEFAULT_DEAD_AFTER)
        if state not in ("stopped",) and (age is None or age > limit):
            state = "dead"
        elif state not in ("stopped",) and age is not None and age > max(2 * interval, limit / 2):
            state = "suspect"
        views.append(NodeView(
            node=node, location=str(st.get("location") or (beat[2] if beat else "")), state=state,
            heartbeat_age=None if age is None else round(age, 2), load=st.get("load"),
            version=str(st.get("version", "")), server=str(st.get("server") or ""),
            epoch=str(st.get("epoch", "")), inflight=int((beat[1] if beat else st).get("inflight") or 0),
            uptime=st.get("uptime"), capabilities=tuple(st.get("capabilities") or ()), status=st,
        ))
    return views


class Health(enum.IntEnum):
    """Also the exit code of ``nxs doctor``."""

    HEALTHY = 0
    DEGRADED = 1
    DOWN = 2


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok, warn, fail
    detail: str


@dataclass
class HealthReport:
    health: Health = Health.HEALTHY
    checks: list[Check] = field(default_factory=list)
    nodes: list[NodeView] = field(default_factory=list)

    def add(self, name: str, level: str, detail: str) -> None:
        self.checks.append(Check(name, level, detail))
        if level == "fail" and self.health < Health.DEGRADED:
            self.health = Health.DEGRADED

    def as_dict(self) -> dict[str, Any]:
        return {"health": self.health.name.lower(), "exit_code": int(self.health),
                "checks": [asdict(c) for c in self.checks], "nodes": [n.as_dict() for n in self.nodes]}


async def check_mesh(mesh: Mesh, *, dead_after: float | None = None, lag_warn: int = 1000) -> HealthReport:
    """Servers, JetStream, streams, consumer lag, dead letters, dead nodes: one pass, no waiting."""
    report = HealthReport()
    info = mesh.server_info()
    peers = info.connect_urls
    report.add("server", "ok", f"{mesh.connected_url} (nats-server {info.version}"
               f"{', cluster ' + info.cluster if info.cluster else ''}"
               f"{', peers ' + ', '.join(peers) if peers else ''})")
    for name, level, detail in security_checks(mesh.config, info, mesh.connected_url):
        report.add(name, level, detail)
    try:
        acct = await mesh.admin.account()
    except MeshError as exc:
        report.add("jetstream", "fail", str(exc))
        report.health = Health.DOWN
        return report
    report.add("jetstream", "ok", f"{acct.streams} streams, {acct.consumers} consumers, "
               f"{acct.storage / 1e6:.1f} MB stored")
    missing, lagging, dlq = [], [], 0
    for spec in STREAMS:
        try:
            si = await mesh.admin.stream(spec.name)
            consumers = await mesh.admin.consumers(spec.name) if si is not None else []
        except MeshError:
            si = None
        if si is None:
            missing.append(spec.name)
            continue
        if spec.name == DLQ_STREAM:
            dlq = si.messages
        for ci in consumers:
            if ci.name.startswith("nxs_tail_"):
                continue
            if ci.backlog >= lag_warn:
                lagging.append(f"{spec.name}/{ci.name}: {ci.backlog}")
    report.add("streams", "fail" if missing else "ok",
               f"missing {', '.join(missing)} (run `nxs init`)" if missing else f"all {len(STREAMS)} present")
    report.add("consumer lag", "warn" if lagging else "ok", "; ".join(lagging) or f"every consumer under {lag_warn}")
    report.add("dead letters", "warn" if dlq else "ok", f"{dlq} in NXS_DLQ (see `nxs dlq list`)" if dlq else "none")
    try:
        report.nodes = await list_nodes(mesh, dead_after=dead_after)
    except MeshError as exc:
        report.add("nodes", "fail", f"cannot read presence: {exc}")
        return report
    dead = [n.node for n in report.nodes if n.state == "dead"]
    live = [n.node for n in report.nodes if n.state not in ("dead", "stopped")]
    report.add("nodes", "fail" if dead else "ok",
               f"{len(live)} live, dead: {', '.join(dead)}" if dead else f"{len(live)} live, none dead")
    degraded = [n for n in report.nodes if n.state == "degraded"]
    if degraded:
        report.add("degraded nodes", "fail", "; ".join(
            f"{n.node}: {', '.join(f'{k} ({v})' for k, v in (n.status.get('problems') or {}).items()) or 'degraded'}"
            for n in degraded))
    return report
