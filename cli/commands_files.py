"""File commands: `nxs file put|get|ls|rm|info` on the mesh's Object Store bucket (NXS_FILES)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from .common import JSON_OPT, console, err_console, new_typer, open_mesh, print_json, run, say, settings
from .tables import Col, fitted, human_bytes

file_app = new_typer(
    help="Files in the mesh (the NATS Object Store bucket NXS_FILES): chunked, SHA-256 checked, replicated.",
    no_args_is_help=True,
)


@contextlib.contextmanager
def _bar(label: str, *, show: bool) -> Iterator[Any]:
    """A Rich progress bar on stderr; yields the ``progress(done, total)`` callback (None when hidden)."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _quiet() -> bool:
    return not err_console.is_terminal


@file_app.command("put")
def put(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="The file to store."),
    name: str = typer.Option(None, "--name", "-n", help="Name in the bucket (default: the file's name)."),
    to: str = typer.Option(None, "--to", help="The node the file is for: named in its metadata, and sent a SYNC notice."),
    description: str = typer.Option("", "--description", help="A free-text description stored with it."),
    as_json: bool = JSON_OPT,
) -> None:
    """Store a file (streamed in 128 KiB chunks; an older file of that name is replaced once complete)."""
    s = settings(ctx)

    async def go() -> Any:
        async with open_mesh(ctx, ensure=to is not None) as mesh:
            with _bar(f"put {name or path.name}", show=not as_json and not _quiet()) as progress:
                return await mesh.files.put(path, name=name, to=to, description=description, progress=progress)

    info = run(go(), debug=s.debug)
    if as_json:
        print_json(info.as_dict())
        return
    say(f"stored {info.name} ({human_bytes(info.size)}, {info.chunks} chunks, {info.digest})"
        + (f"; {to} notified" if to else ""))


@file_app.command("get")
def get(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The file's name in the bucket."),
    output: str = typer.Option(None, "--output", "-o",
                               help="Where to write it (default: ./NAME); - writes to stdout (checked at the end)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Fetch a file; it appears at the output path only after its SHA-256 matched."""
    s = settings(ctx)
    to_stdout = output == "-"
    dest: Any = sys.stdout.buffer if to_stdout else Path(output or Path(name).name)

    async def go() -> Any:
        async with open_mesh(ctx) as mesh:
            with _bar(f"get {name}", show=not as_json and not _quiet()) as progress:
                return await mesh.files.get(name, dest, progress=progress)

    info = run(go(), debug=s.debug)
    if to_stdout:
        sys.stdout.buffer.flush()
        return
    if as_json:
        print_json({**info.as_dict(), "path": str(dest)})
        return
    say(f"wrote {dest} ({human_bytes(info.size)}, digest verified)")


@file_app.command("ls")
def ls(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List the stored files: name, size, chunks, modified, intended node."""
    s = settings(ctx)

    async def go() -> Any:
        async with open_mesh(ctx) as mesh:
            return await mesh.files.list()

    files = run(go(), debug=s.debug)
    if as_json:
        print_json([f.as_dict() for f in files])
        return
    if not files:
        say("no files")
        return
    cols = [Col("name"), Col("size", justify="right"), Col("chunks", justify="right"), Col("modified"), Col("to")]
    rows = [[f.name, human_bytes(f.size), str(f.chunks), f.mtime[:19].replace("T", " "), f.to or "-"] for f in files]
    console.print(fitted(cols, rows, title=f"files in {files[0].bucket}"))


@file_app.command("info")
def info(ctx: typer.Context, name: str = typer.Argument(..., help="The file's name."), as_json: bool = JSON_OPT) -> None:
    """Show one file's meta (size, chunks, digest, metadata)."""
    s = settings(ctx)

    async def go() -> Any:
        async with open_mesh(ctx) as mesh:
            return await mesh.files.info(name)

    found = run(go(), debug=s.debug)
    if as_json:
        print_json(found.as_dict())
        return
    for key, value in found.as_dict().items():
        say(f"{key:12} {value}")


@file_app.command("rm")
def rm(ctx: typer.Context, name: str = typer.Argument(..., help="The file's name.")) -> None:
    """Delete a file (its chunks are purged from the bucket)."""
    s = settings(ctx)

    async def go() -> Any:
        async with open_mesh(ctx) as mesh:
            return await mesh.files.delete(name)

    gone = run(go(), debug=s.debug)
    say(f"deleted {gone.name} ({human_bytes(gone.size)})")


def register(app: typer.Typer) -> None:
    app.add_typer(file_app, name="file")
