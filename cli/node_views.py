"""Rich renderings for the node commands: tables for nodes, alerts and health, and the `nxs top` loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table

from .common import console

_STATE_STYLE = {"running": "green", "starting": "cyan", "draining": "yellow", "suspect": "yellow",
                "stopped": "dim", "dead": "bold red"}
_LEVEL_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def nodes_table(views: list[Any]) -> Table:
    table = Table(title="nodes", title_justify="left")
    for col in ("node", "location", "state", "heartbeat", "load", "inflight", "version", "server"):
        # Names and states never wrap or shrink; the server column gives way on narrow terminals.
        table.add_column(col, justify="right" if col in ("heartbeat", "load", "inflight") else "left",
                         no_wrap=col != "server", min_width=len(col) if col != "server" else 6)
    for v in views:
        style = _STATE_STYLE.get(v.state, "")
        table.add_row(v.node, v.location or "-", f"[{style}]{v.state}[/]" if style else v.state,
                      _age(v.heartbeat_age), "-" if v.load is None else f"{v.load:.2f}", str(v.inflight),
                      v.version or "-", v.server or "-")
    if not views:
        table.caption = "no nodes yet: start one with `nxs node run --id NAME`"
    return table


def alerts_table(items: list[dict[str, Any]], *, header: bool = True) -> Table:
    table = Table(show_header=header, box=None if not header else Table().box)
    for col in ("time", "event", "node", "detail"):
        table.add_column(col)
    for a in items:
        event = a.get("event", "?")
        style = "bold red" if event == "dead" else "green" if event == "recovered" else ""
        detail = ", ".join(f"{k}={a[k]}" for k in ("silent_for", "released", "restarted", "detected_by") if k in a)
        table.add_row(str(a.get("time", ""))[:23], f"[{style}]{event}[/]" if style else event,
                      str(a.get("node", "")), detail)
    return table


def health_table(report: Any) -> Group:
    table = Table(title=f"mesh health: {report.health.name.lower()}", title_justify="left")
    table.add_column("check")
    table.add_column("", justify="center")
    table.add_column("detail")
    for c in report.checks:
        table.add_row(c.name, f"[{_LEVEL_STYLE[c.level]}]{c.level}[/]", c.detail)
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
