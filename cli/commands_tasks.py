"""Task commands: task submit, status, cancel and map (the shared work queue and scatter/gather, issue 11)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer

from .commands_node import _mesh, _parse_value
from .common import console, err_console, new_typer, print_json, priority_option, run, settings

# NB: the library is imported inside the commands, so `nxs --help` stays fast.

task_app = new_typer(help="The shared work queue: submit a task, see its state, cancel it, map a capability over many inputs.", no_args_is_help=True)
JSON_OPT = typer.Option(False, "--json", help="Machine-readable output (one JSON document).")
TASK_ID = typer.Argument(..., help="The task id `nxs task submit` printed.")


def _on_task(ctx: typer.Context, op: Callable[[Any, str], Awaitable[dict[str, Any]]], task_id: str) -> dict[str, Any]:
    """Run ``op(mesh, task_id)`` on a connected mesh (errors become a clean message and exit 1)."""

    async def go() -> dict[str, Any]:
        async with _mesh(ctx) as mesh:
            return await op(mesh, task_id)

    return run(go(), debug=settings(ctx).debug)


@task_app.command("submit")
def task_submit(
    ctx: typer.Context,
    capability: str = typer.Argument(..., help="Who can do it, e.g. sleep, echo, resize."),
    payload: str = typer.Argument("null", help="The task payload (JSON, or a string)."),
    priority: int = priority_option(),
    ttl: int = typer.Option(3600, "--ttl", help="Seconds before it expires unstarted (0 = never)."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait for the result and print it."),
    timeout: float = typer.Option(60.0, "--timeout", "-t", help="With --wait: how long (s)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Queue a task for any worker with CAPABILITY (exactly one of them completes it)."""
    from nxs_mesh.node.tasks import submit_task

    async def go() -> Any:
        async with _mesh(ctx) as mesh:
            return await submit_task(mesh, capability, _parse_value(payload), priority=priority, ttl=ttl,
                                     wait=wait, timeout=timeout)

    ack, result = run(go(), debug=settings(ctx).debug)
    out: dict[str, Any] = {"task_id": ack.message_id, "seq": ack.seq}
    if result is not None:
        out.update(node=result.payload.metadata.get("node"), result=result.content)
    if as_json:
        print_json(out)
    else:
        console.print(f"task {ack.message_id} queued (seq {ack.seq})", highlight=False)
        if result is not None:
            console.print(f"done by {out['node']}: {json.dumps(result.content, default=str)}", highlight=False)


def _print_status(record: dict[str, Any]) -> None:
    for key in ("task_id", "state", "node", "worker", "submitter", "delivery", "at", "finished", "by", "result",
                "error"):
        if key in record:
            value = record[key]
            shown = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) + " UTC" if key in ("at", "finished") \
                else json.dumps(value, default=str) if key == "result" else value
            console.print(f"{'attempts' if key == 'delivery' else key:>9}: {shown}", highlight=False)


@task_app.command("status")
def task_status(ctx: typer.Context, task_id: str = TASK_ID, as_json: bool = JSON_OPT) -> None:
    """Show a task's state (submitted, claimed, completed, failed, cancelled, expired, orphaned), its node
    (and worker), attempts, times, result or error."""
    from nxs_mesh.client.task_states import task_status

    record = _on_task(ctx, task_status, task_id)
    print_json(record) if as_json else _print_status(record)


@task_app.command("cancel")
def task_cancel(ctx: typer.Context, task_id: str = TASK_ID, as_json: bool = JSON_OPT) -> None:
    """Cancel a task: unclaimed, it never runs; running, its handler is cancelled on its worker. Its caller
    gets one `cancelled` RESULT. With a trust file, only its submitter or the admin may cancel it."""
    from nxs_mesh.client.task_states import cancel_task

    record = _on_task(ctx, cancel_task, task_id)
    print_json(record) if as_json else console.print(f"task {task_id} cancelled", highlight=False)


@task_app.command("map")
def task_map(
    ctx: typer.Context,
    capability: str = typer.Argument(..., help="Who can do it, e.g. sleep, echo, resize."),
    input_file: Path = typer.Argument(..., metavar="INPUT.jsonl", help="One JSON payload per line: one subtask each."),
    deadline: float = typer.Option(60.0, "--deadline", help="Seconds for the whole map; what is left then is ended."),
    quorum: float = typer.Option(1.0, "--quorum", help="Fraction of subtasks that must complete (0-1]; once met, "
                                                      "the rest is cancelled. Exit 1 when it is not met."),
    per_task_timeout: float = typer.Option(None, "--per-task-timeout", help="Cancel a subtask running longer (s)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Scatter/gather: run one subtask per line of INPUT.jsonl on the live nodes with CAPABILITY, with a live
    progress bar (done/failed/running per node), then a summary table; results in input order."""
    from .task_map import as_document, live_progress, read_jsonl, show_summary

    async def go() -> Any:
        payloads = read_jsonl(input_file)
        with live_progress(len(payloads), show=not as_json and err_console.is_terminal) as progress:
            async with _mesh(ctx) as mesh:
                return await mesh.gather(capability, payloads, quorum=quorum, deadline=deadline,
                                         per_task_timeout=per_task_timeout, on_progress=progress)

    got = run(go(), debug=settings(ctx).debug)
    if as_json:
        print_json(as_document(got))
    else:
        show_summary(got)
    if not got.quorum_met:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")
