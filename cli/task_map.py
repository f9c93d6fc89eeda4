"""`nxs task map CAPABILITY INPUT.jsonl`: one subtask per JSONL line through ``Mesh.gather``, a live
progress bar (done/failed/running per node) on stderr, then a summary table (or one JSON document)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .common import console, err_console

__all__ = ["read_jsonl", "show_summary", "live_progress", "as_document"]


def read_jsonl(path: Path) -> list[Any]:
    """One payload per non-blank line; a line that is not JSON is an error naming the file and line."""
    from nxs_mesh.wire.errors import ConfigError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("INPUT", f"cannot read {path}: {exc.strerror or exc}") from None
    payloads = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            payloads.append(json.loads(line))
        except ValueError as exc:
            raise ConfigError("INPUT", f"{path.name} line {n}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not payloads:
        raise ConfigError("INPUT", f"{path.name} holds no payload (one JSON value per line)")
    return payloads


def _per_node(report: Any) -> str:
    rows = sorted(report.per_node.items())
    return "  ".join(f"{node} {r['done']}✓ {r['failed']}✗ {r['running']}▶" for node, r in rows) or "waiting for workers"


@contextlib.contextmanager
def live_progress(total: int, *, show: bool) -> Iterator[Callable[[Any], None] | None]:
    """A Rich progress bar on stderr fed by ``GatherProgress`` reports (None when hidden)."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("gather"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=err_console, transient=True) as bar:
        task = bar.add_task("", total=total)

        def update(report: Any) -> None:
            bar.update(task, completed=report.finished, description=_per_node(report))

        yield update


def as_document(got: Any) -> dict[str, Any]:
    return {"gather_id": got.gather_id, "quorum": got.quorum, "quorum_met": got.quorum_met, "counts": got.counts(),
            "subtasks": [{"index": s.index, "task_id": s.task_id, "state": s.state, "node": s.node,
                          "result": s.result, "error": s.error} for s in got]}


def show_summary(got: Any) -> None:
    """Per node: completed, failed and other ends; then the totals against the quorum."""
    from rich.table import Table

    table = Table("node", "completed", "failed", "other", title=f"gather {got.gather_id}")
    per: dict[str, list[int]] = {}
    for s in got:
        row = per.setdefault(s.node or "-", [0, 0, 0])
        row[0 if s.ok else 1 if s.state == "failed" else 2] += 1
    for node, (ok, failed, other) in sorted(per.items()):
        table.add_row(node, str(ok), str(failed), str(other))
    console.print(table)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(got.counts().items()))
    met = "met" if got.quorum_met else "NOT met"
    console.print(f"{got.completed}/{len(got)} completed ({counts}); quorum {got.quorum:g} {met}", highlight=False)
