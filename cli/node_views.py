"""Rich renderings for the node commands: tables for nodes, alerts and health, and the `nxs top` loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .common import console
from .tables import Col, fitted

_STATE_STYLE = {"running": "green", "starting": "cyan", "draining": "yellow", "suspect": "yellow",
                "stopped": "dim", "dead": "bold red"}
_PATH_STYLE = {"relay": "yellow", "disconnected": "red"}
_LEVEL_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _path(path: object) -> Text:
    """The node's server path from its status: local, peer, relay (yellow: its direct routes failed)."""
    text = str(path) if path else "-"
    return Text(text, style=_PATH_STYLE.get(text, ""))


def nodes_table(views: list[Any]) -> Table:
    # Ids and states are shown whole; on a narrow terminal version, server, inflight and load give way.
    columns = [Col("node"), Col("location", wrap=True), Col("state"), Col("heartbeat", "right"),
               Col("load", "right", drop=4), Col("inflight", "right", drop=3), Col("version", drop=1),
               Col("server", wrap=True, drop=2), Col("path", drop=2)]  # path: after server when narrow
    rows = [[v.node, v.location or "-", Text(v.state, style=_STATE_STYLE.get(v.state, "")), _age(v.heartbeat_age),
             "-" if v.load is None else f"{v.load:.2f}", str(v.inflight), v.version or "-", v.server or "-",
             _path(v.status.get("path"))] for v in views]
    table = fitted(columns, rows, title="nodes", title_justify="left")
    if not views:
        table.caption = "no nodes yet: start one with `nxs node run --id NAME`"
    return table


def alerts_table(items: list[dict[str, Any]], *, header: bool = True) -> Table:
    rows = []
    for a in items:
        event = a.get("event", "?")
        style = "bold red" if event == "dead" else "green" if event == "recovered" else ""
        detail = ", ".join(f"{k}={a[k]}" for k in ("silent_for", "released", "restarted", "detected_by") if k in a)
        rows.append([str(a.get("time", ""))[:23], Text(event, style=style), str(a.get("node", "")), detail])
    return fitted([Col("time"), Col("event"), Col("node"), Col("detail", wrap=True)], rows,
                  show_header=header, **({} if header else {"box": None}))


def health_table(report: Any) -> Group:
    rows = [[c.name, Text(c.level, style=_LEVEL_STYLE[c.level]), c.detail] for c in report.checks]
    table = fitted([Col("check"), Col("", "center"), Col("detail", wrap=True)], rows,
                   title=f"mesh health: {report.health.name.lower()}", title_justify="left")
    parts: list[Any] = [table]
    if report.nodes:
        parts.append(nodes_table(report.nodes))
    return Group(*parts)


async def top_loop(mesh: Any, *, interval: float = 1.0, iterations: int = 0) -> None:
    from nxs_mesh.client.admin import STREAMS
    from nxs_mesh.node.checkup import list_nodes
    from nxs_mesh.wire.errors import MeshError

    previous: dict[str, int] = {}
    last_t = time.monotonic()

    async def frame() -> Group:
        nonlocal last_t
        now = time.monotonic()
        dt = max(1e-3, now - last_t)
        last_t = now
        rates = Table(title="streams", title_justify="left")
        for col in ("stream", "messages", "last seq", "msg/s"):
            rates.add_column(col, justify="left" if col == "stream" else "right")
        for spec in STREAMS:
            try:
                si = await mesh.admin.stream(spec.name)
            except MeshError:
                si = None
            if si is None:  # missing (or unreachable for now): shown as '-'
                rates.add_row(spec.name, "-", "-", "-")
                continue
            seq = si.last_seq
            rate = (seq - previous[spec.name]) / dt if spec.name in previous else 0.0
            previous[spec.name] = seq
            rates.add_row(spec.name, str(si.messages), str(seq), f"{rate:.1f}")
        return Group(nodes_table(await list_nodes(mesh)), rates)

    n = 0
    with Live(await frame(), console=console, refresh_per_second=4, screen=False) as live:
        while iterations == 0 or n < iterations:
            await asyncio.sleep(interval)  # sleep-ok: the refresh timer
            live.update(await frame())
            n += 1
