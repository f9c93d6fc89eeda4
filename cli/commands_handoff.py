"""`nxs handoff AGENT --to NODE [--context FILE]`: move an agent to another node (``mesh.handoff``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from .common import JSON_OPT, err_console, fail, open_mesh, print_json, run, say, settings


@contextlib.contextmanager
def _progress(show: bool) -> Iterator[tuple[Callable[[str], None] | None, Any]]:
    """A Rich status line per step and a bar for the context upload, on stderr (nothing when hidden)."""
    if not show:
        yield None, None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TransferSpeedColumn

    with Progress(SpinnerColumn(), "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("handoff", total=None)

        def step(name: str) -> None:
            bar.update(task, description=f"handoff: {name}", completed=0, total=None)

        def upload(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield step, upload


def handoff(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="The agent to move, e.g. agent:research (see `nxs agents`)."),
    to: str = typer.Option(..., "--to", help="The node that takes it over (it runs `nxs node run`)."),
    context: Path = typer.Option(None, "--context", help="A file to hand over as the agent's context "
                                                         "(default: its owner packages it)."),
    need: list[str] = typer.Option([], "--need", help="A capability the target must have (repeatable)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds each step may take before it is rolled back."),
    as_json: bool = JSON_OPT,
) -> None:
    """Hand an agent over to another node: offer -> accept -> its context bundle through NXS_FILES
    (SHA-256 checked) -> commit (the registry's new owner and epoch) -> old owner standby -> the new owner
    takes the messages that arrived meanwhile, in order, and says it is ready. A refused offer or a
    step that times out leaves the agent with its owner."""
    s = settings(ctx)
    if context is not None and not context.is_file():
        fail(f"--context {context}: no such file", debug=s.debug)

    async def go() -> Any:
        async with open_mesh(ctx) as mesh:
            with _progress(not as_json and err_console.is_terminal) as (step, upload):
                return await mesh.handoff(agent, to=to, context=context, needs=tuple(need), timeout=timeout,
                                          progress=upload, on_step=step)

    outcome = run(go(), debug=s.debug)
    if as_json:
        print_json(outcome.as_dict())
        return
    say(f"{outcome.agent}: {outcome.from_node} -> {outcome.to_node}, epoch {outcome.epoch} "
        f"({outcome.seconds:.2f}s; {outcome.drained} held messages delivered; bundle "
        f"{outcome.bundle.get('size', 0)} bytes)")
    say(f"{outcome.to_node}: {outcome.ready or '(committed; its ready line was not heard)'}", style="green")
    if not outcome.released:
        say(f"{outcome.from_node} did not confirm standby; it is fenced by the new epoch", style="yellow", err=True)
