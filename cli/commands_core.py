"""Core commands: up (in up_cmd), pub, tail (in tail_cmd), streams, init, dlq (list / replay / purge), config.

Exit codes: 0 success, 1 anything the mesh or the server refused (a bad id, no server, a stream conflict),
2 a command line that could not be parsed (unknown option, bad --meta / --since syntax), 75 `pub` kept
the message in the outbox instead of storing it (see pub_offline), 130 Ctrl-C where stopping was not the
normal way to end the command.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.table import Table
from rich.text import Text

from .common import (
    JSON_OPT,
    console,
    err_console,
    fail,
    new_typer,
    print_json,
    priority_option,
    run,
    settings,
    shorten,
)
from .common import open_mesh as _open
from .common import say as _say
from .pub_input import content_value, flag_for, parse_meta, require_utf8
from .pub_offline import queue as queue_offline
from .pub_offline import report_queued
from .tables import Col, fitted, human_bytes

if TYPE_CHECKING:  # the library is imported inside the commands, so `nxs --help` stays fast
    from nxs_mesh import Mesh
    from nxs_mesh.client.admin import EnsureResult

dlq_app = new_typer(help="Dead letters: messages a consumer could not handle, with the reason.",
                    no_args_is_help=True)


# -- pub --------------------------------------------------------------------------------------------------
def pub(
    ctx: typer.Context,
    message_type: str = typer.Argument(..., metavar="TYPE",
                                       help="chat, command, task, result, status, heartbeat, sync or alert."),
    content: str = typer.Argument(None, metavar="CONTENT", help="The content; '-' reads it from stdin."),
    to: str = typer.Option(None, "--to", "-t", help="Target instance id ('*' = every node) [chat --agent: its owner]."),
    agent: str = typer.Option("*", "--agent", "-a", help="Target agent id ('*' = all); a chat finds it (`nxs agents`)."),
    priority: int = priority_option(),
    ttl: int = typer.Option(300, "--ttl", help="Seconds until it expires (0 = never)."),
    meta: list[str] = typer.Option([], "--meta", "-m", help="Metadata key=value (repeatable; JSON values parsed)."),
    correlation_id: str = typer.Option(None, "--correlation-id", help="Correlation id (needed for result)."),
    json_content: bool = typer.Option(False, "--json-content", help="Parse CONTENT as JSON."),
    capability: str = typer.Option(None, "--capability", "-C", help="Task capability (needed for task)."),
    message_id: str = typer.Option(None, "--id", "--message-id", help="Message id (UUID) for a deliberate resend."),
    queue: bool = typer.Option(True, "--queue/--no-queue",
                               help="If no server with JetStream answers, keep it in this node's outbox "
                                    "(exit 75) instead of refusing (exit 1)."),
    seal: bool = typer.Option(False, "--seal", help="Encrypt the content to the target's key (a broadcast: the "
                                                    "mesh key) from the trust file; routing stays readable."),
    as_json: bool = JSON_OPT,
) -> None:
    """Publish one envelope and print where it was stored, e.g. `nxs pub chat --to nxs-node-002 hello`.

    When no server with JetStream answers, it is not stored: it waits in this node's outbox
    (<data_dir>/outbox-<id>.sqlite), and pub exits 75 naming the file and the `nxs outbox flush`
    command that sends it (a worker running with the same --id and data dir sends it too)."""
    from nxs_mesh.wire import subjects
    from nxs_mesh.wire.envelope import Source, check_id, new_envelope
    from nxs_mesh.wire.errors import EnvelopeError

    s = settings(ctx)
    cfg = s.config
    metadata = parse_meta(meta)
    to = _target(ctx, to, agent, message_type)
    # Validate before connecting: a bad id or bad text is reported the same whether or not a server is up.
    try:
        value = content_value(content, as_json=json_content)
        require_utf8(metadata, "payload.metadata")
        if capability is not None:
            check_id(capability, "capability")
            metadata["capability"] = capability
        env = new_envelope(
            message_type, value, source=Source(cfg.instance_id, cfg.agent_id, cfg.location), to=to, agent=agent,
            priority=priority, ttl=ttl, metadata=metadata, correlation_id=correlation_id, message_id=message_id,
        )
        subject = subjects.for_envelope(env)
    except EnvelopeError as exc:
        flag = flag_for(exc.field)
        fail(f"{exc}" + (f" (see {flag})" if flag else ""), debug=s.debug, exc=exc)
    res, cause = run(_pub(ctx, env, subject, queue, seal), debug=s.debug)
    if res.queued:
        raise typer.Exit(report_queued(s, res, subject, cause, as_json=as_json))
    if as_json:
        print_json({"stream": res.stream, "seq": res.seq, "duplicate": res.duplicate,
                    "message_id": res.message_id, "subject": subject, "queued": False})
    elif res.duplicate:
        _say(f"duplicate: already stored as {res.stream} seq {res.seq} (message_id {res.message_id})")
    else:
        _say(f"stored {res.stream} seq {res.seq} (message_id {res.message_id})")


def _target(ctx: typer.Context, to: str | None, agent: str, message_type: str) -> str:
    """``--to``, or for a chat to one agent its owner from the registry (unknown or orphaned: an error)."""
    if to is not None or agent == "*" or message_type.lower() != "chat":
        return to or "*"

    async def owner() -> str:
        async with _open(ctx) as mesh:
            found: str = await mesh.agents.resolve(agent)
            return found

    return run(owner(), debug=settings(ctx).debug)


async def _pub(ctx: typer.Context, env: Any, subject: str, queue: bool, seal: bool = False) -> tuple[Any, str]:
    """The publish result, and why it was queued instead of stored ('' when stored)."""
    from nxs_mesh.client.publishing import OFFLINE_ERRORS
    from nxs_mesh.wire.errors import JetStreamUnavailable, MeshError, NoResponders

    try:
        async with _open(ctx) as mesh:
            try:
                return await mesh.send(env, subject=subject, seal=seal), ""
            except (NoResponders, JetStreamUnavailable) as exc:
                if not await _stream_missing(mesh, subject):
                    raise  # JetStream is there but has no quorum now: queue below
                raise MeshError(
                    f"{exc}: no stream takes {subject}; "
                    "create the streams with `nxs init` (or start a local mesh with `nxs up`)"
                ) from None
    except OFFLINE_ERRORS as exc:
        if not queue:
            raise
        # Nothing acknowledged it: keep it in this node's outbox, sent later under the same message_id
        # (so a late duplicate is dropped); pub_offline says why not exit 0.
        return queue_offline(settings(ctx), env, subject, seal=seal), str(exc)


async def _stream_missing(mesh: Mesh, subject: str) -> bool:
    """True when JetStream answers that no stream takes ``subject`` (as opposed to having no quorum)."""
    from nxs_mesh.wire.errors import MeshError

    try:
        return await mesh.admin.find_stream(subject) is None
    except MeshError:
        return False  # no answer: JetStream is there but busy, or we cannot tell


# -- streams / init ---------------------------------------------------------------------------------------
async def _streams(ctx: typer.Context) -> list[dict[str, Any]]:
    from nxs_mesh.client.admin import STREAMS

    rows: list[dict[str, Any]] = []
    async with _open(ctx) as mesh:
        for spec in STREAMS:
            report = await mesh.admin.stream(spec.name)
            if report is None:
                rows.append({"stream": spec.name, "exists": False, "subjects": list(spec.subjects)})
            else:
                rows.append(report.as_dict())
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
            table.add_row(r["stream"], str(r["messages"]), human_bytes(r["bytes"]), str(r["consumers"]),
                          str(r["replicas"]), r["retention"] or "", ", ".join(r["subjects"]))
    console.print(table)
    if any(not r["exists"] for r in rows):
        err_console.print("some streams are missing: create them with `nxs init`", highlight=False)


async def _init(ctx: typer.Context, replicas: int | None, agents: list[str]) -> list[EnsureResult]:
    async with _open(ctx) as mesh:
        if mesh.config.trust_file:  # secure mesh: also what least-privileged nodes may not create
            from nxs_mesh.deploy.identity import load_trust
            from nxs_mesh.node.provision import provision

            return await provision(mesh, load_trust(mesh.config.trust_file)["nodes"], agents=agents,
                                   replicas=replicas)
        if agents:
            from nxs_mesh.wire.errors import ConfigError

            raise ConfigError("--agent provisions an agent's consumer on a secure mesh (a config with trust_file); "
                             "an open mesh's nodes create it themselves")
        return await mesh.ensure_streams(replicas)


def init(
    ctx: typer.Context,
    replicas: int = typer.Option(None, "--replicas", "-r", min=1, max=5,
                                 help="Replicas per stream [config, else min(3, cluster size)]."),
    agents: list[str] = typer.Option([], "--agent", "-a", metavar="AGENT",
                                     help="Secure mesh: also provision this agent's message consumer (repeatable; "
                                          "agents already in the registry are always provisioned)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Create or update the mesh's streams (idempotent); a conflicting stream is reported and exits 1.

    On a secure mesh (a config with `trust_file`, run with the admin identity) it also creates the
    buckets, every trusted node's command and handoff consumers and each agent's message consumer,
    which nodes may not create themselves."""
    s = settings(ctx)
    results = run(_init(ctx, replicas, agents), debug=s.debug)
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
    from nxs_mesh.client.dlq import list_dead_letters

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
    # The id (what `dlq replay` takes), the subject and the reason always show; the preview gives way first.
    columns = [Col("id", "right"), Col("time"), Col("subject"), Col("deliveries", "right", drop=2),
               Col("reason", wrap=True), Col("preview", wrap=True, drop=1)]
    console.print(fitted(columns, [
        [str(r["id"]), datetime.fromisoformat(r["time"]).astimezone().strftime("%m-%d %H:%M:%S"), r["subject"],
         "" if r["deliveries"] is None else str(r["deliveries"]), r["reason"], shorten(r["preview"], 60)]
        for r in rows], box=None, pad_edge=False, header_style="bold"))


async def _dlq_replay(ctx: typer.Context, ids: Sequence[int], every: bool) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from nxs_mesh.client.dlq import list_dead_letters, replay_dead_letter

    async with _open(ctx) as mesh:
        targets = [d.seq async for d in list_dead_letters(mesh)] if every else list(ids)
        return [asdict(await replay_dead_letter(mesh, seq)) for seq in targets]


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
    from nxs_mesh.wire.contract import DLQ_STREAM

    async with _open(ctx) as mesh:
        return await mesh.admin.purge(DLQ_STREAM)


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
    from .tail_cmd import tail_command
    from .up_cmd import up

    app.command("up")(up)
    app.command("pub")(pub)
    app.command("tail")(tail_command)
    app.command("streams")(streams)
    app.command("init")(init)
    app.command("config")(config)
    app.add_typer(dlq_app, name="dlq")


__all__ = ["register"]

