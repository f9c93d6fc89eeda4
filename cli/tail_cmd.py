"""`nxs tail`: stored messages as a table, readable lines (following) or the exact wire JSON."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from .common import console, err_console, fail, parse_since, run, settings, shorten
from .common import open_mesh as _open
from .common import say as _say

if TYPE_CHECKING:
    from nxs_mesh import Mesh
    from nxs_mesh.client.mesh import Record


# -- tail -------------------------------------------------------------------------------------------------
_ALL_KINDS = ("chat", "command", "task", "result", "status", "heartbeat", "sync", "alert")


class _Filter:
    """--type / --node, applied on the client (the stream's subjects cannot express 'from node X')."""

    def __init__(self, types: Iterable[str], nodes: Iterable[str]) -> None:
        from nxs_mesh.wire.envelope import normalize_type

        self.types = {normalize_type(t) for t in types}
        self.nodes = set(nodes)

    @property
    def active(self) -> bool:
        return bool(self.types or self.nodes)

    def __call__(self, rec: Record) -> bool:
        from nxs_mesh.wire import subjects
        from nxs_mesh.wire.errors import EnvelopeError

        env = rec.envelope
        if env is not None:
            kind, ends = env.message_type, {env.source.instance_id, env.target.instance_id}
        else:  # an invalid record: judge it by its subject
            try:
                sub = subjects.parse(rec.subject)
                kind, ends = sub.kind.upper(), {sub.instance or ""}
            except EnvelopeError:
                kind, ends = "", set()
        return (not self.types or kind in self.types) and (not self.nodes or bool(ends & self.nodes))


def _records(
    mesh: Mesh, kind: str, *, seq: int | None = None, since: datetime | None = None, last: int | None = None,
    follow: bool = False,
) -> AsyncIterator[Record]:
    return mesh.tail(kind, seq=seq, since=since, last=last, follow=follow)


async def _history(
    mesh: Mesh, kind: str, keep: _Filter, *, seq: int | None, since: datetime | None, last: int | None
) -> tuple[list[Record], int]:
    """Stored records (filtered) and the highest sequence the read covered, so following can go on after it."""
    from nxs_mesh.client.admin import stream_for_kind
    from nxs_mesh.wire.errors import MeshError

    name = stream_for_kind(kind).name
    report = await mesh.admin.stream(name)
    if report is None:
        raise MeshError(f"stream {name} does not exist; run `nxs init` (or `nxs up`)")
    end = report.last_seq
    if last == 0:
        return [], end
    # With client-side filters, "the last N" means the last N that match: read from the start.
    client_side = keep.active or kind == "task"
    server_last = None if client_side else last
    if client_side and last is not None and seq is None and since is None:
        seq = 1
    out: deque[Record] = deque(maxlen=last)
    top = end
    async for rec in _records(mesh, kind, seq=seq, since=since, last=server_last):
        top = max(top, rec.seq)
        # The server starts a by-time read at the last message when `since` is after it: drop what is older.
        if since is not None and rec.stored_at < since:
            continue
        if keep(rec):
            out.append(rec)
    return list(out), top


async def _follow(mesh: Mesh, kind: str, keep: _Filter, after: int, queue: asyncio.Queue[Record]) -> None:
    async for rec in _records(mesh, kind, seq=after + 1, follow=True):
        if keep(rec):
            await queue.put(rec)


async def _tail(
    ctx: typer.Context, kinds: Sequence[str], keep: _Filter, *, seq: int | None, since: datetime | None,
    last: int | None, follow: bool, as_json: bool,
) -> None:
    async with _open(ctx) as mesh:
        history: list[Record] = []
        tops: dict[str, int] = {}
        for kind in kinds:
            recs, tops[kind] = await _history(mesh, kind, keep, seq=seq, since=since, last=last)
            history.extend(recs)
        if len(kinds) > 1:
            history.sort(key=lambda r: r.stored_at)
            if last is not None:
                history = history[-last:] if last else []
        if as_json:
            for rec in history:
                _print_wire(rec)
        elif follow:
            for rec in history:
                _print_line(rec)
        elif history:
            console.print(_table(history))
        else:
            err_console.print("no messages", highlight=False)
        if not follow:
            return
        queue: asyncio.Queue[Record] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as tg:
                for kind in kinds:
                    tg.create_task(_follow(mesh, kind, keep, tops[kind], queue))
                while True:
                    rec = await queue.get()
                    if as_json:
                        _print_wire(rec)
                    else:
                        _print_line(rec)
        except BaseExceptionGroup as group:  # one reader failed: report its error, not the group
            raise group.exceptions[0] from None


def _when(rec: Record) -> str:
    return rec.stored_at.astimezone().strftime("%m-%d %H:%M:%S")


def _addr(instance: str, agent: str) -> str:
    return f"{instance}/{agent}"


def _table(records: Sequence[Record]) -> Table:
    rows: list[list[Text]] = []
    for rec in records:
        env = rec.envelope
        if env is None:
            rows.append([Text(str(rec.seq)), Text(_when(rec)), Text("INVALID", style="red"), Text(rec.subject),
                         Text(""), Text(""), Text(shorten(rec.error or "", 120), style="red")])
            continue
        rows.append([
            Text(str(rec.seq)), Text(_when(rec)), Text(env.message_type),
            Text(_addr(env.source.instance_id, env.source.agent_id)),
            Text(_addr(env.target.instance_id, env.target.agent_id)), Text(str(env.priority)),
            Text(shorten(env.content)),
        ])
    table = Table(box=None, pad_edge=False, header_style="bold")
    headers = ("seq", "time", "type", "from", "to", "prio")
    widths = [max([len(col)] + [row[i].cell_len for row in rows]) for i, col in enumerate(headers)]
    for col, width in zip(headers, widths, strict=True):
        table.add_column(col, no_wrap=True, min_width=width)
    # The metadata columns keep their width; only the content is cut (with an ellipsis) to fit the terminal.
    room = max(12, console.width - sum(widths) - 2 * len(widths))
    table.add_column("content", no_wrap=True, overflow="ellipsis", max_width=room)
    for row in rows:
        row[-1].truncate(room, overflow="ellipsis")
        table.add_row(*row)
    return table


def _print_line(rec: Record) -> None:
    env = rec.envelope
    if env is None:
        _say(f"{_when(rec)} #{rec.seq} INVALID on {rec.subject}: {rec.error}", style="red")
        return
    _say(f"{_when(rec)} #{rec.seq} {env.message_type} {_addr(env.source.instance_id, env.source.agent_id)} -> "
         f"{_addr(env.target.instance_id, env.target.agent_id)} p{env.priority}: {shorten(env.content, 200)}")


def _print_wire(rec: Record) -> None:
    """The stored bytes as they are (re-encoded as JSON only for MessagePack records or multi-line JSON)."""
    from nxs_mesh.wire.envelope import encode

    if rec.envelope is None:
        # stdout stays one valid envelope per line; the reader still learns that something was skipped
        err_console.print(f"skipped invalid record seq {rec.seq} on {rec.subject}: {rec.error}",
                          highlight=False, markup=False, soft_wrap=True)
        return
    if rec.headers.get("Nxs-Encoding") == "msgpack":
        line = encode(rec.envelope).decode()
    else:
        line = rec.data.decode("utf-8")
        if "\n" in line or "\r" in line:
            line = encode(rec.envelope).decode()
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def tail_command(
    ctx: typer.Context,
    kind: str = typer.Argument("chat", metavar="TYPE",
                               help=f"Which stream: {', '.join(_ALL_KINDS)}, dlq, or all (every one but dlq)."),
    last: int = typer.Option(None, "--last", "-n", min=0, help="The last N messages [10 when no start is given]."),
    seq: int = typer.Option(None, "--seq", min=1, help="Start at this stream sequence."),
    since: str = typer.Option(None, "--since", help="Start at a time: 10m, 2h, 1d or ISO 8601."),
    follow: bool = typer.Option(False, "--follow/--no-follow", "-f", help="Keep printing new messages (Ctrl-C stops)."),
    types: list[str] = typer.Option([], "--type", help="Only this message type (repeatable)."),
    nodes: list[str] = typer.Option([], "--node", help="Only messages from or to this node (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="One envelope per line, exactly the wire JSON."),
) -> None:
    """Show stored messages: the last 10 by default, or from --seq / --since; -f keeps following."""
    s = settings(ctx)
    if sum(x is not None for x in (last, seq, since)) > 1:
        raise typer.BadParameter("use only one of --last, --seq, --since")
    when = parse_since(since) if since is not None else None
    if last is None and seq is None and when is None:
        last = 10
    kinds = list(_ALL_KINDS) if kind.lower() == "all" else [kind.lower()]
    from nxs_mesh.wire.errors import MeshError

    try:
        keep = _Filter(types, nodes)
    except MeshError as exc:  # an unknown --type: the library's message names the known ones
        fail(str(exc), debug=s.debug, exc=exc)
    # Ctrl-C is how a follow ends: a clean stop (exit 0), not an error.
    run(_tail(ctx, kinds, keep, seq=seq, since=when, last=last, follow=follow, as_json=as_json),
        debug=s.debug, quiet_interrupt=follow)

