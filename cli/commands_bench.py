"""`nxs bench`: mesh vs raw nats-py, same server, same run; a Rich table or JSON."""

from __future__ import annotations

from typing import Any

import typer
from nxs_cli.bench import DEFAULT_SCENARIOS, BenchOptions, BenchReport, Row, run_bench
from nxs_cli.bench.report import ANCHORS
from nxs_cli.bench.runner import SCENARIOS, check_names
from rich.console import Console
from rich.table import Table

from nxs_mesh.wire.errors import MeshError

from .common import console, err_console, fail, print_json, run

__all__ = ["register", "render_table"]


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric in ("MB", "s", "us/msg"):
        return f"{value:,.1f}" if metric != "s" else f"{value:,.2f}"
    return f"{value:,.0f}"


def render_table(report: BenchReport) -> Table:
    m, o = report.machine, report.options
    table = Table(
        title=f"nxs bench: {o.messages} messages of {o.size} B, median of {o.rounds} rounds",
        caption=(f"{m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
                 + ", ".join(f"{k} {v}" for k, v in m["versions"].items())),
    )
    right = {"justify": "right"}
    columns = [("scenario", {}), ("metric", {}), ("mesh", right), *((_ANCHOR_TITLES[a], right) for a in ANCHORS),
               ("ratio", right), ("target", {}), ("met", {"justify": "center"})]
    for col, kw in columns:
        table.add_column(col, no_wrap=True, **kw)  # type: ignore[arg-type]
    for row in report.rows:
        table.add_row(*_cells(row))
    return table


def notes(report: BenchReport) -> list[str]:
    return [f"{row.scenario}: {row.note}" for row in report.rows if row.note]


#: Column titles of the anchors (``bench.report``): nats-py's convenience API, lean loops on nats-py
#: core, a plain push consumer, Synadia's agent SDK.
_ANCHOR_TITLES = {"raw": "raw nats-py", "lean": "lean nats-py", "push": "push nats-py", "sdk": "Synadia SDK"}


def _ratios(row: Row) -> str:
    """The ratio the target reads (mesh / raw when the target names no anchor)."""
    if not row.versus:
        return "-" if row.ratio is None else f"{row.ratio:.2f}x"
    parts = [f"{r:.2f}x {a}" if len(row.versus) > 1 else f"{r:.2f}x"
             for a in row.versus if (r := row.ratio_to(a)) is not None]
    return ", ".join(parts) or "-"


def _cells(row: Row) -> list[str]:
    ratio = _ratios(row)
    met = "" if row.met is None else ("[green]yes[/]" if row.met else "[red]no[/]")
    if row.skipped:
        met = "[yellow]skipped[/]"
    anchors = [_fmt(getattr(row, a), row.metric) for a in ANCHORS]
    return [row.scenario, row.metric, _fmt(row.mesh, row.metric), *anchors, ratio, row.target, met]


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        fail(f"--nodes: expected positive integers separated by commas, got {text!r}")
    return sizes


def _explicit_url(ctx: typer.Context) -> str | None:
    obj: Any = ctx.find_root().obj
    flags = obj.get("flags") if isinstance(obj, dict) else None
    return (flags or {}).get("servers")


def _profile(what: str, options: BenchOptions) -> None:
    from nxs_cli.bench.profile import PROFILED, profile_mesh

    if what not in PROFILED:
        fail(f"--profile: expected one of {', '.join(PROFILED)}, got {what!r}")
    with err_console.status(f"profiling {what}"):
        text = run(profile_mesh(what, options))
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        ctx: typer.Context,
        scenarios: list[str] = typer.Argument(
            None, help=f"Scenarios to run (default: all of {', '.join(DEFAULT_SCENARIOS)}); by name only: "
                       f"{', '.join(n for n in SCENARIOS if n not in DEFAULT_SCENARIOS)}.",
            show_default=False
        ),
        messages: int = typer.Option(20_000, "--messages", "-n", min=10, help="Messages per throughput run."),
        size: int = typer.Option(256, "--size", min=1, help="Content bytes per message."),
        rounds: int = typer.Option(3, "--rounds", min=1, help="Alternating mesh/raw rounds; the median is shown."),
        batch: int = typer.Option(32, "--batch", min=1, help="Pull fetch batch, mesh and raw alike."),
        idle_window: float = typer.Option(10.0, "--idle-window", min=0.5, help="Footprint window in seconds."),
        trials: int = typer.Option(3, "--trials", min=1, help="kill -9 trials for failure detection."),
        nodes: str = typer.Option("10,50,150,300", "--nodes", help="scale: mesh sizes, comma-separated."),
        per_process: int = typer.Option(50, "--per-process", min=1, help="scale: nodes embedded per process."),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON on stdout."),
        profile: str = typer.Option(None, "--profile", metavar="publish|consume",
                                    help="Instead of scenarios: profile the mesh side of one (top functions by own time)."),
        url: str = typer.Option(None, "--url", help="Benchmark this server instead of an embedded one."),
        monitor_url: str = typer.Option(None, "--monitor-url", help="Its HTTP monitor (default host:8222)."),
    ) -> None:
        """Measure throughput, latency and footprint, mesh side by side with raw nats-py."""
        try:
            names = check_names(scenarios or [])
        except MeshError as exc:
            fail(str(exc))
        options = BenchOptions(
            messages=messages, size=size, rounds=rounds, batch=batch, url=url or _explicit_url(ctx),
            monitor_url=monitor_url, idle_window=idle_window, settle=min(2.0, idle_window),
            failure_trials=trials, scale_nodes=_sizes(nodes), scale_per_process=per_process,
        )
        if profile is not None:
            _profile(profile, options)
            return
        with err_console.status("starting") as status:
            def progress(text: str) -> None:
                status.update(f"[bold]bench[/] {text}")

            report = run(run_bench(names, options, progress=progress))
        if as_json:
            print_json(report.as_dict())
        else:
            # A table for the README: never squeeze it below its natural width when piped.
            out = console if console.width >= 170 else Console(width=170, highlight=False)
            out.print(render_table(report))
            for line in notes(report):
                console.print(f"  {line}", highlight=False, soft_wrap=True)

