"""Core commands: up, pub, tail, streams, init, dlq (list / replay / purge), config.

Exit codes: 0 success, 1 anything the mesh or the server refused (a bad id, no server, a stream conflict),
2 a command line that could not be parsed (unknown option, bad --meta / --since syntax), 130 Ctrl-C
where stopping was not the normal way to end the command.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.table import Table
from rich.text import Text

from .common import console, err_console, fail, parse_since, print_json, run, settings

if TYPE_CHECKING:  # the library is imported inside the commands, so `nxs --help` stays fast
    from nxs_mesh import Mesh, MeshConfig
    from nxs_mesh.reader import Record
    from nxs_mesh.streams import EnsureResult

JSON_OPT = typer.Option(False, "--json", help="Machine-readable output on stdout.")

dlq_app = typer.Typer(help="Dead letters: messages a consumer could not handle, with the reason.",
                      no_args_is_help=True)


def _say(text: str, *, style: str | None = None, err: bool = False) -> None:
    """One line exactly as written (no wrapping, no markup from message content), flushed at once."""
    (err_console if err else console).print(Text(text, style=style or ""), soft_wrap=True, highlight=False)
    (sys.stderr if err else sys.stdout).flush()


def _open(ctx: typer.Context, *, ensure: bool = False) -> Mesh:
    from nxs_mesh import Mesh

    return Mesh(settings(ctx).config, ensure=ensure)


# -- up ---------------------------------------------------------------------------------------------------
def up(
    ctx: typer.Context,
    port: int = typer.Option(None, "--port", "-p", help="Client port [4222; env NXS_PORT]."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    store: str = typer.Option(None, "--store", help="JetStream store directory [.nxs; env NXS_DATA_DIR]."),
    cluster: int = typer.Option(1, "--cluster", min=1, max=5,
                                help="Run N routed servers on loopback, client ports PORT..PORT+N-1."),
    monitor_port: int = typer.Option(None, "--monitor-port",
                                     help="HTTP monitoring port [8222, a random one if that is busy]."),
    replicas: int = typer.Option(None, "--replicas", min=1, max=5, help="Stream replicas [min(3, servers)]."),
) -> None:
    """Run a local nats-server with JetStream, create the mesh's streams, stay up until Ctrl-C / SIGTERM."""
    from nxs_mesh.errors import MeshError
    from nxs_mesh.server import LocalCluster, NatsServer, port_is_free

    s = settings(ctx)
    cfg = s.config
    port = cfg.port if port is None else port
    store_dir = Path(store or cfg.data_dir)
    stop = threading.Event()
    got: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        got.append(signal.Signals(signum).name)
        stop.set()

    # Installed before the server starts: a Ctrl-C during startup then stops cleanly too.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    handle: NatsServer | LocalCluster
    if cluster > 1:
        handle = LocalCluster(cluster, base_dir=store_dir, host=host,
                              client_ports=[port + i for i in range(cluster)])
        servers = handle.servers
    else:
        mport = cfg.monitor_port if monitor_port is None else monitor_port
        if mport > 0 and not port_is_free(host, mport):
            mport = -1
        handle = NatsServer(host=host, port=port, monitor_port=mport, store_dir=store_dir, name="nxs")
        servers = [handle]
    try:
        try:
            handle.start()
        except MeshError as exc:
            fail(str(exc), debug=s.debug, exc=exc)
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        urls = [f"nats://{connect_host}:{srv.port}" for srv in servers]
        for srv, url in zip(servers, urls, strict=True):
            who = f"{srv.name}: " if cluster > 1 else ""
            _say(f"{who}nats-server {url} (monitoring {srv.monitor_url}, JetStream store {srv.store_dir})")
        want = replicas or cfg.replicas or min(3, cluster)
        results = run(_up_ensure(cfg.replace(servers=tuple(urls)), want), debug=s.debug)
        _say(f"streams (replicas {min(3, want)}): "
             + ", ".join(f"{r.stream} {r.action}" for r in results))
        for r in results:
            if r.action == "conflict":
                _say(f"warning: {r.stream} conflicts with the mesh's config: {r.detail}", style="yellow", err=True)
        _say(f"listening on {','.join(urls)}")
        _say(f"clients: --url {','.join(urls)} (or NXS_URL); Ctrl-C to stop")
        while not stop.wait(0.5):  # wakes on a signal at once; the timeout only watches the servers
            dead = [srv for srv in servers if not srv.running]
            if dead:
                tail = "\n".join(list(dead[0].log)[-10:])
                fail(f"nats-server {dead[0].name or ''} exited unexpectedly:\n{tail}")
        _say(f"stopping ({got[0] if got else 'signal'})...")
    finally:
        handle.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
    _say("stopped")


async def _up_ensure(cfg: MeshConfig, replicas: int) -> list[EnsureResult]:
    from nxs_mesh import Mesh

    async with Mesh(cfg, ensure=False) as mesh:
        return await mesh.ensure_streams(replicas)


# -- pub --------------------------------------------------------------------------------------------------
_FLAG_OF_FIELD = {
    "target.instance_id": "--to", "target.agent_id": "--agent", "priority": "--priority", "ttl": "--ttl",
    "message_id": "--id", "correlation_id": "--correlation-id", "capability": "--capability",
    "payload.metadata.capability": "--capability", "message_type": "TYPE", "payload.content": "CONTENT",
    "payload.metadata": "--meta",
}


def _parse_meta(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: use key=value", param_hint="--meta")
        try:
            out[key.strip()] = json.loads(value)  # numbers, booleans, lists, objects
        except ValueError:
            out[key.strip()] = value
    return out


def pub(
    ctx: typer.Context,
    message_type: str = typer.Argument(..., metavar="TYPE",
                                       help="chat, command, task, result, status, heartbeat, sync or alert."),
    content: str = typer.Argument(None, metavar="CONTENT", help="The content; '-' reads it from stdin."),
    to: str = typer.Option("*", "--to", "-t", help="Target instance id ('*' = every node)."),
    agent: str = typer.Option("*", "--agent", "-a", help="Target agent id ('*' = every agent)."),
    priority: int = typer.Option(1, "--priority", "-P", help="0..9, higher is more urgent."),
    ttl: int = typer.Option(300, "--ttl", help="Seconds until it expires (0 = never)."),
    meta: list[str] = typer.Option([], "--meta", "-m", help="Metadata key=value (repeatable; JSON values parsed)."),
    correlation_id: str = typer.Option(None, "--correlation-id", help="Correlation id (needed for result)."),
    json_content: bool = typer.Option(False, "--json-content", help="Parse CONTENT as JSON."),
    capability: str = typer.Option(None, "--capability", "-C", help="Task capability (needed for task)."),
    message_id: str = typer.Option(None, "--id", "--message-id", help="Message id (UUID) for a deliberate resend."),
    queue: bool = typer.Option(True, "--queue/--no-queue",
                               help="If no server with JetStream answers, keep it in this node's outbox."),
    as_json: bool = JSON_OPT,
) -> None:
    """Publish one envelope and print where it was stored, e.g. `nxs pub chat --to nxs-node-002 hello`.

    When no server with JetStream answers, the message waits in this node's outbox
    (<data_dir>/outbox-<id>.sqlite) and is sent later by the node worker or `nxs outbox flush`."""
    from nxs_mesh import subjects
    from nxs_mesh.envelope import Source, check_id, new_envelope
    from nxs_mesh.errors import EnvelopeError

    s = settings(ctx)
    text = "" if content is None else content
    if text == "-":
        text = sys.stdin.read().removesuffix("\n")
    value: Any = text
    if json_content:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="CONTENT") from None
    metadata = _parse_meta(meta)
    cfg = s.config
    # Validate before connecting: a bad id is reported the same whether or not a server is up.
    try:
        if capability is not None:
            check_id(capability, "capability")
            metadata["capability"] = capability
        env = new_envelope(
            message_type, value, source=Source(cfg.instance_id, cfg.agent_id, cfg.location), to=to, agent=agent,
            priority=priority, ttl=ttl, metadata=metadata, correlation_id=correlation_id, message_id=message_id,
        )
        subject = subjects.for_envelope(env)
    except EnvelopeError as exc:
        flag = _FLAG_OF_FIELD.get(exc.field or "")
        fail(f"{exc}" + (f" (see {flag})" if flag else ""), debug=s.debug, exc=exc)
    res = run(_pub(ctx, env, subject, queue), debug=s.debug)
    if as_json:
        print_json({"stream": res.stream, "seq": res.seq, "duplicate": res.duplicate,
                    "message_id": res.message_id, "subject": subject, "queued": res.queued})
    elif res.queued:
        _say(f"queued in the outbox of {cfg.instance_id} (message_id {res.message_id}); the node worker "
             "or `nxs outbox flush` sends it once the mesh answers")
    elif res.duplicate:
        _say(f"duplicate: already stored as {res.stream} seq {res.seq} (message_id {res.message_id})")
    else:
        _say(f"stored {res.stream} seq {res.seq} (message_id {res.message_id})")


async def _pub(ctx: typer.Context, env: Any, subject: str, queue: bool) -> Any:
    from nxs_mesh.errors import ConnectError, JetStreamUnavailable, MeshError, MeshTimeout, NoResponders

    try:
        async with _open(ctx) as mesh:
            try:
                return await mesh.send(env, subject=subject)
            except (NoResponders, JetStreamUnavailable) as exc:
                if not await _stream_missing(mesh, subject):
                    raise  # JetStream is there but has no quorum now: queue below
                raise MeshError(
                    f"{exc}: no stream takes {subject}; "
                    "create the streams with `nxs init` (or start a local mesh with `nxs up`)"
                ) from None
    except (ConnectError, JetStreamUnavailable, MeshTimeout) as exc:
        if not queue:
            raise
        # Nothing acknowledged it: keep it in this node's outbox, which the node worker (or
        # `nxs outbox flush`) sends later under the same message_id, so a late duplicate is dropped.
        err_console.print(f"not stored now ({exc})", highlight=False, markup=False)
        return _queue_offline(settings(ctx).config, env, subject)


async def _stream_missing(mesh: Mesh, subject: str) -> bool:
    """True when JetStream answers that no stream takes ``subject`` (as opposed to having no quorum)."""
    from nats.js import errors as jse

    try:
        await asyncio.wait_for(mesh.js.find_stream_name_by_subject(subject), 2.0)
    except jse.NotFoundError:
        return True
    except Exception:
        return False
    return False


def _queue_offline(cfg: Any, env: Any, subject: str) -> Any:
    from nxs_mesh.mesh import queue_offline
    from nxs_mesh.outbox import Outbox, outbox_path

    path = outbox_path(cfg.data_dir, cfg.instance_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    box = Outbox(path)
    try:
        return queue_offline(box, env, subject=subject)
    finally:
        box.close()


# -- tail -------------------------------------------------------------------------------------------------
_ALL_KINDS = ("chat", "command", "task", "result", "status", "heartbeat", "sync", "alert")


class _Filter:
    """--type / --node, applied on the client (the stream's subjects cannot express 'from node X')."""

    def __init__(self, types: Iterable[str], nodes: Iterable[str]) -> None:
        from nxs_mesh.envelope import normalize_type

        self.types = {normalize_type(t) for t in types}
        self.nodes = set(nodes)

    @property
    def active(self) -> bool:
        return bool(self.types or self.nodes)

    def __call__(self, rec: Record) -> bool:
        from nxs_mesh import subjects
        from nxs_mesh.errors import EnvelopeError

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
    if kind == "task":
        return _peek_workqueue(mesh, "NXS_TASK", "nxs.task.>", start=seq or 1, since=since, follow=follow)
    return mesh.tail(kind, seq=seq, since=since, last=last, follow=follow)


async def _peek_workqueue(
    mesh: Mesh, stream: str, subject: str, *, start: int, since: datetime | None, follow: bool
) -> AsyncIterator[Record]:
    """Read a work-queue stream without taking its work: message by message (a consumer there would
    compete with the workers, and the server refuses unacknowledged ones)."""
    from nats.js import errors as jse

    from nxs_mesh.envelope import decode
    from nxs_mesh.errors import EnvelopeError, translate_nats_errors
    from nxs_mesh.reader import Record

    cursor = max(1, start)
    while True:
        with translate_nats_errors(f"tail {stream}"):
            try:
                raw = await mesh.js.get_msg(stream, seq=cursor, subject=subject, next=True)
            except jse.NotFoundError:
                raw = None
        if raw is None or raw.seq is None:
            if not follow:
                return
            await asyncio.sleep(1.0)  # sleep-ok: polling for new work items; a consumer would take them
            continue
        cursor = raw.seq + 1
        if since is not None and raw.time is not None and raw.time < since:
            continue
        headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
        data = raw.data or b""
        try:
            env, error = decode(data, msgpack=headers.get("Nxs-Encoding") == "msgpack"), None
        except EnvelopeError as exc:
            env, error = None, str(exc)
        stored = raw.time or datetime.now(UTC)
        yield Record(raw.seq, raw.subject or "", stored, data, headers, env, error)


async def _history(
    mesh: Mesh, kind: str, keep: _Filter, *, seq: int | None, since: datetime | None, last: int | None
) -> tuple[list[Record], int]:
    """Stored records (filtered) and the highest sequence the read covered, so following can go on after it."""
    from nats.js import errors as jse

    from nxs_mesh.errors import MeshError, translate_nats_errors
    from nxs_mesh.streams import stream_for_kind

    name = stream_for_kind(kind).name
    with translate_nats_errors(f"tail {name}"):
        try:
            end = (await mesh.js.stream_info(name)).state.last_seq
        except jse.NotFoundError:
            raise MeshError(f"stream {name} does not exist; run `nxs init` (or `nxs up`)") from None
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


def _content(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


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
                         Text(""), Text(""), Text(_content(rec.error or "", 120), style="red")])
            continue
        rows.append([
            Text(str(rec.seq)), Text(_when(rec)), Text(env.message_type),
            Text(_addr(env.source.instance_id, env.source.agent_id)),
            Text(_addr(env.target.instance_id, env.target.agent_id)), Text(str(env.priority)),
            Text(_content(env.content)),
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
         f"{_addr(env.target.instance_id, env.target.agent_id)} p{env.priority}: {_content(env.content, 200)}")


def _print_wire(rec: Record) -> None:
    """The stored bytes as they are (re-encoded as JSON only for MessagePack records or multi-line JSON)."""
    from nxs_mesh.envelope import encode

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


def tail(
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
    from nxs_mesh.errors import MeshError

    try:
        keep = _Filter(types, nodes)
    except MeshError as exc:  # an unknown --type: the library's message names the known ones
        fail(str(exc), debug=s.debug, exc=exc)
    # Ctrl-C is how a follow ends: a clean stop (exit 0), not an error.
    run(_tail(ctx, kinds, keep, seq=seq, since=when, last=last, follow=follow, as_json=as_json),
        debug=s.debug, quiet_interrupt=follow)


# -- streams / init ---------------------------------------------------------------------------------------
def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


async def _streams(ctx: typer.Context) -> list[dict[str, Any]]:
    from nats.js import errors as jse

    from nxs_mesh.errors import translate_nats_errors
    from nxs_mesh.streams import STREAMS

    rows: list[dict[str, Any]] = []
    async with _open(ctx) as mesh:
        for spec in STREAMS:
            with translate_nats_errors(f"stream {spec.name}"):
                try:
                    info = await mesh.js.stream_info(spec.name)
                except jse.NotFoundError:
                    rows.append({"stream": spec.name, "exists": False, "subjects": list(spec.subjects)})
                    continue
            cfg, st = info.config, info.state
            rows.append({
                "stream": spec.name, "exists": True, "subjects": list(cfg.subjects or []),
                "retention": getattr(cfg.retention, "value", cfg.retention),
                "messages": st.messages, "bytes": st.bytes, "consumers": st.consumer_count,
                "replicas": cfg.num_replicas, "first_seq": st.first_seq, "last_seq": st.last_seq,
                "leader": info.cluster.leader if info.cluster else None,
            })
    return rows


def streams(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List the mesh's streams: messages, bytes, consumers, replicas (missing ones marked)."""
    s = settings(ctx)
    rows = run(_streams(ctx), debug=s.debug)
    if as_json:
        print_json(rows)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col, just in (("stream", "left"), ("messages", "right"), ("bytes", "right"), ("consumers", "right"),
                      ("replicas", "right"), ("retention", "left"), ("subjects", "left")):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        if not r["exists"]:
            table.add_row(r["stream"], Text("missing", style="red"), "", "", "", "", ", ".join(r["subjects"]))
        else:
            table.add_row(r["stream"], str(r["messages"]), _human_bytes(r["bytes"]), str(r["consumers"]),
                          str(r["replicas"]), r["retention"] or "", ", ".join(r["subjects"]))
    console.print(table)
    if any(not r["exists"] for r in rows):
        err_console.print("some streams are missing: create them with `nxs init`", highlight=False)


async def _init(ctx: typer.Context, replicas: int | None) -> list[EnsureResult]:
    async with _open(ctx) as mesh:
        return await mesh.ensure_streams(replicas)


def init(
    ctx: typer.Context,
    replicas: int = typer.Option(None, "--replicas", "-r", min=1, max=5,
                                 help="Replicas per stream [config, else min(3, cluster size)]."),
    as_json: bool = JSON_OPT,
) -> None:
    """Create or update the mesh's streams (idempotent); a conflicting stream is reported and exits 1."""
    s = settings(ctx)
    results = run(_init(ctx, replicas), debug=s.debug)
    if as_json:
        print_json([{"stream": r.stream, "action": r.action, "detail": r.detail} for r in results])
    else:
        styles = {"created": "green", "updated": "cyan", "unchanged": "dim", "conflict": "bold red"}
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("stream", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("detail")
        for r in results:
            table.add_row(r.stream, Text(r.action, style=styles.get(r.action, "")), Text(r.detail))
        console.print(table)
    bad = [r for r in results if r.action == "conflict"]
    if bad:
        fail(f"{len(bad)} stream(s) conflict with the mesh's config ({', '.join(r.stream for r in bad)}): "
             "delete or migrate them (e.g. `nats stream rm NAME`, which deletes its messages), then run "
             "`nxs init` again")


# -- dlq --------------------------------------------------------------------------------------------------
async def _dlq_list(ctx: typer.Context, last: int | None) -> list[dict[str, Any]]:
    from nxs_mesh.dlq import list_dead_letters

    async with _open(ctx) as mesh:
        return [d.as_dict() async for d in list_dead_letters(mesh, last=last)]


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    last: int = typer.Option(None, "--last", "-n", min=1, help="Only the last N [all]."),
    as_json: bool = JSON_OPT,
) -> None:
    """List dead letters: id, time, reason, original subject, deliveries, a preview."""
    s = settings(ctx)
    rows = run(_dlq_list(ctx, last), debug=s.debug)
    if as_json:
        print_json(rows)
        return
    if not rows:
        err_console.print("no dead letters", highlight=False)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("id", "time", "subject", "deliveries"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("preview", overflow="ellipsis", no_wrap=True)
    for r in rows:
        when = datetime.fromisoformat(r["time"]).astimezone().strftime("%m-%d %H:%M:%S")
        table.add_row(str(r["id"]), when, Text(r["subject"]), "" if r["deliveries"] is None else str(r["deliveries"]),
                      Text(r["reason"]), Text(_content(r["preview"], 60)))
    console.print(table)


async def _dlq_replay(ctx: typer.Context, ids: Sequence[int], every: bool) -> list[dict[str, Any]]:
    from nats.js import errors as jse

    from nxs_mesh.dlq import DLQ_STREAM, list_dead_letters, replay_dead_letter
    from nxs_mesh.errors import MeshError, translate_nats_errors

    done: list[dict[str, Any]] = []
    async with _open(ctx) as mesh:
        if every:
            targets = [(d.seq, d.subject, d.stream) async for d in list_dead_letters(mesh)]
        else:
            targets = []
            for seq in ids:
                with translate_nats_errors(f"dead letter {seq}"):
                    try:
                        raw = await mesh.js.get_msg(DLQ_STREAM, seq)
                    except jse.NotFoundError:
                        raise MeshError(f"no dead letter with id {seq} (see `nxs dlq list`)") from None
                h = dict(raw.headers or {})
                targets.append((seq, h.get("Nxs-Dlq-Subject", ""), h.get("Nxs-Dlq-Stream", "")))
        for seq, subject, stream in targets:
            new_seq = await replay_dead_letter(mesh, seq)
            done.append({"id": seq, "subject": subject, "stream": stream, "seq": new_seq})
    return done


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(None, metavar="ID", help="Dead letter ids (see `nxs dlq list`)."),
    every: bool = typer.Option(False, "--all", help="Replay every dead letter."),
    as_json: bool = JSON_OPT,
) -> None:
    """Publish dead letters back to their original subject and remove them from the dead-letter queue."""
    s = settings(ctx)
    if bool(ids) == every:
        raise typer.BadParameter("give dead letter ids or --all (not both)")
    done = run(_dlq_replay(ctx, ids or [], every), debug=s.debug)
    if as_json:
        print_json(done)
        return
    if not done:
        err_console.print("no dead letters", highlight=False)
    for d in done:
        _say(f"replayed dead letter {d['id']} -> {d['subject']} ({d['stream'] or 'stream'} seq {d['seq']})")


async def _dlq_purge(ctx: typer.Context) -> int:
    from nxs_mesh.dlq import DLQ_STREAM
    from nxs_mesh.errors import translate_nats_errors

    async with _open(ctx) as mesh:
        with translate_nats_errors("purge dead letters"):
            count = (await mesh.js.stream_info(DLQ_STREAM)).state.messages
            await mesh.js.purge_stream(DLQ_STREAM)
    return int(count)


@dlq_app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JSON_OPT,
) -> None:
    """Delete every dead letter."""
    s = settings(ctx)
    if not yes:
        if not sys.stdin.isatty():
            fail("purging deletes every dead letter: add --yes to confirm", code=2)
        typer.confirm("Delete every dead letter?", abort=True)
    count = run(_dlq_purge(ctx), debug=s.debug)
    if as_json:
        print_json({"purged": count})
    else:
        _say(f"purged {count} dead letter(s)")


# -- config -----------------------------------------------------------------------------------------------
_SECRETS = ("password", "token", "nkey_seed")


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    safe = f"{user}:***" if sep else "***"  # a bare userinfo is a token
    return urlunsplit(parts._replace(netloc=f"{safe}@{hostport}"))


def config(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """Show every setting, its value and where it came from (flag, env:NXS_..., file:PATH, default)."""
    s = settings(ctx)
    values = s.config.as_dict(redact=True)
    values["servers"] = [_redact_url(u) for u in values["servers"]]
    for key in _SECRETS:
        if values.get(key):
            values[key] = "***"
    rows = {name: {"value": value, "source": s.sources.get(name, "default")} for name, value in values.items()}
    if as_json:
        print_json(rows)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", overflow="fold")
    for name, row in rows.items():
        value = row["value"]
        shown = ",".join(value) if isinstance(value, list) else ("" if value is None else str(value))
        src = row["source"]
        table.add_row(name, Text(shown), Text(src, style="dim" if src == "default" else "bold"))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("pub")(pub)
    app.command("tail")(tail)
    app.command("streams")(streams)
    app.command("init")(init)
    app.command("config")(config)
    app.add_typer(dlq_app, name="dlq")


__all__ = ["register"]

