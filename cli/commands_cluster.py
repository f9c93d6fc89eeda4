"""Cluster commands: `nxs deploy render` (one nats-server config per host) and `nxs outbox` (what waits)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from nxs_mesh.wire.errors import MeshError

from .common import console, err_console, fail, new_typer, port_option, print_json, settings
from .tables import Col, fitted

deploy_app = new_typer(help="Production configs: nats-server per host over Tailscale.", no_args_is_help=True)
outbox_app = new_typer(help="The offline outbox: publishes waiting for a JetStream quorum.",
                       invoke_without_command=True)

JSON_OPT = typer.Option(False, "--json", help="Machine-readable output (one JSON document).")


@deploy_app.command("render")
def deploy_render(
    ctx: typer.Context,
    host: list[str] = typer.Option(None, "--host", help="NAME=ADDRESS (Tailscale IP or MagicDNS name); repeat."),
    tailscale_status: str = typer.Option(
        None, "--tailscale-status", help="`tailscale status --json` output: a file, or - for stdin."),
    tag: str = typer.Option("tag:nxs", "--tag", help="Select Tailscale peers carrying this tag ('' = all)."),
    online_only: bool = typer.Option(False, "--online-only", help="Leave out peers Tailscale reports offline."),
    out: Path = typer.Option(Path("deploy/generated"), "--out", "-o", help="Directory for <host>.conf/.env."),
    cluster_name: str = typer.Option("nxs", "--cluster-name"),
    client_port: int = port_option(4222, "--client-port", help="Port for clients."),
    cluster_port: int = port_option(6222, "--cluster-port", help="Port for routes between the servers."),
    monitor_port: int = port_option(8222, "--monitor-port", help="HTTP monitoring port."),
    store_dir: str = typer.Option("/var/lib/nxs/jetstream", "--store-dir"),
    sync_interval: str = typer.Option(
        "always", "--sync-interval", help="always (fsync each write) or a duration like 2m (faster, riskier)."),
    route_by: str = typer.Option("ip", "--route-by", help="ip | ipv6 | dns (MagicDNS names)."),
    listen: str = typer.Option("0.0.0.0", "--listen", help="0.0.0.0, or `tailscale` to bind the host's own address."),
    monitor_listen: str = typer.Option("127.0.0.1", "--monitor-listen", help="Address of the HTTP monitoring port."),
    tls_cert: str = typer.Option(None, "--tls-cert"),
    tls_key: str = typer.Option(None, "--tls-key"),
    tls_ca: str = typer.Option(None, "--tls-ca"),
    route_tls: bool = typer.Option(False, "--route-tls", help="TLS on routes too (needs --tls-cert/--tls-key)."),
    relay: str = typer.Option(None, "--relay", help="HOST:PORT or wss://HOST:PORT: also renders relay-hub.conf, a hub "
                                                     "leafnode-connected to every host, listed last for clients."),
    secure: str = typer.Option(None, "--secure", help="A `nxs deploy secure init` directory: mTLS with pinned "
                                                       "certificates and nkey users with least privilege."),
    install_dir: str = typer.Option(None, "--install-dir", help="With --secure: where each node's directory "
                                                                 "lives on its host (e.g. /etc/nxs)."),
    websocket: str = typer.Option(None, "--websocket", help="[HOST:]PORT: nats-server's WebSocket listener (TLS "
                                                             "unless on loopback; --secure: mTLS + nkeys)."),
    mqtt: str = typer.Option(None, "--mqtt", help="[HOST:]PORT: nats-server's MQTT listener (TLS unless on loopback; "
                                                  "not with --secure: MQTT cannot sign nkey challenges)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Validate each file with `nats-server -t`."),
    as_json: bool = JSON_OPT,
) -> None:
    """Write one nats-server config (and a client .env) per mesh host."""
    from nxs_mesh.deploy.render import HUB_FILE, DeployOptions, render, write_configs

    debug = settings(ctx).debug
    try:
        hosts = _select_hosts(host, tailscale_status, tag, online_only)
        opts = DeployOptions(
            cluster_name=cluster_name, client_port=client_port, cluster_port=cluster_port,
            monitor_port=monitor_port, store_dir=store_dir, sync_interval=sync_interval, route_by=route_by,
            listen=listen, monitor_listen=monitor_listen, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca,
            route_tls=route_tls, relay=relay, secure_dir=secure, install_dir=install_dir, websocket=websocket, mqtt=mqtt,
        )
        paths = write_configs(hosts, out, opts)
        if check:
            _check(hosts, paths, opts)
        rendered = {r.host.name: r for r in render(hosts, opts)}
    except MeshError as exc:
        fail(str(exc), debug=debug, exc=exc)
    offline = [h.name for h in hosts if not h.online]
    rows = [_row(h, p, rendered[h.name].servers, opts, check=check) for h, p in zip(hosts, paths, strict=True)]
    hub = {"config": str(out / HUB_FILE), "url": opts.relay_hub.url} if opts.relay_hub else None
    if as_json:
        print_json({"hosts": rows, "sync_interval": sync_interval, "offline": offline, "relay": hub})
        return
    _show_rendered(rows, offline, check=check, cluster_name=cluster_name, sync_interval=sync_interval, hub=hub)


def _row(h: Any, conf: Path, servers: tuple[str, ...], opts: Any, *, check: bool) -> dict[str, Any]:
    """One host's line of the render report, with the URLs of its WebSocket/MQTT listeners."""
    tls = bool(opts.tls_cert or opts.secure_dir)
    where = h.address("ip") if opts.listen != "0.0.0.0" or tls else "127.0.0.1"
    return {"host": h.name, "address": h.address(opts.route_by), "online": h.online, "config": str(conf),
            "env": str(conf.with_suffix(".env")), "servers": list(servers), "checked": check,
            "listeners": {li.kind: li.url(li.host or where, tls=tls) for li in opts.listeners}}


def _check(hosts: list[Any], paths: list[Path], opts: Any) -> None:
    """`nats-server -t` on each config; with --install-dir the files are not here yet, so the check
    runs on the same config rendered with this machine's paths."""
    import dataclasses
    import tempfile

    from nxs_mesh.deploy.render import HUB_FILE, check_config, write_configs

    if opts.relay:  # --relay: the hub's config, next to the hosts'
        check_config(paths[0].parent / HUB_FILE)
    if not (opts.secure_dir and opts.install_dir):
        for p in paths:
            check_config(p)
        return
    with tempfile.TemporaryDirectory(prefix="nxs-check-") as tmp:
        for p in write_configs(hosts, tmp, dataclasses.replace(opts, install_dir=None)):
            check_config(p)


def _select_hosts(host: list[str] | None, tailscale_status: str | None, tag: str, online_only: bool) -> list[Any]:
    """The mesh hosts from --host flags or a `tailscale status --json` document."""
    from nxs_mesh.deploy.tailscale import hosts_from_status, load_status, parse_host_flag

    if bool(host) == bool(tailscale_status):
        raise MeshError("give either --host NAME=ADDR (repeatable) or --tailscale-status FILE|-")
    if host:
        return [parse_host_flag(h) for h in host]
    assert tailscale_status is not None
    text = sys.stdin.read() if tailscale_status == "-" else _read(tailscale_status)
    hosts = hosts_from_status(load_status(text), tag=tag or None, include_offline=not online_only)
    if not hosts:
        raise MeshError(f"no host in the tailscale status carries {tag!r}")
    return hosts


def _show_rendered(rows: list[dict[str, Any]], offline: list[str], *, check: bool, cluster_name: str,
                   sync_interval: str, hub: dict[str, str] | None) -> None:
    hosts = rows  # one row per host
    console.print(fitted(
        [Col("host"), Col("address"), Col("config", wrap=True), Col("checked", drop=1)],
        [[r["host"] + ("" if r["online"] else " (offline)"), r["address"], r["config"],
          "nats-server -t ok" if check else "-"] for r in rows],
        title=f"cluster {cluster_name}: {len(hosts)} hosts, sync_interval {sync_interval}"))
    if offline:
        err_console.print(f"note: {', '.join(offline)} offline now; their routes are retried until they join")
    if len(hosts) % 2 == 0:
        n = len(hosts)
        err_console.print(f"note: {n} hosts tolerate {(n - 1) // 2} failure(s), no more than {n - 1} would; "
                          "prefer 3 or 5")
    if hub:
        console.print(f"relay hub: {hub['config']} (clients fall back to {hub['url']})")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise MeshError(f"cannot read {path}: {exc.strerror}") from None


@outbox_app.callback()
def outbox_show(
    ctx: typer.Context,
    path: Path = typer.Option(None, "--path", help="Outbox file (default: <data_dir>/outbox-<id>.sqlite)."),
    limit: int = typer.Option(20, "--limit", "-n", help="Show at most N waiting messages."),
    as_json: bool = JSON_OPT,
) -> None:
    """Show what waits in this node's offline outbox."""
    if ctx.invoked_subcommand is not None:
        return
    box = _open(ctx, path)
    try:
        stats, items = box.stats(), box.peek(limit)
    finally:
        box.close()
    if as_json:
        print_json({"path": stats.path, "messages": stats.messages, "bytes": stats.bytes,
                    "max_messages": stats.max_messages, "oldest_age_s": stats.oldest_age_s,
                    "items": [i.as_dict() for i in items]})
        return
    console.print(f"outbox {stats.path}: [bold]{stats.messages}[/] waiting ({stats.bytes} bytes"
                  + (f", oldest {stats.oldest_age_s:.1f}s" if stats.oldest_age_s is not None else "") + ")")
    if items:
        columns = [Col("#", "right"), Col("message_id"), Col("subject", wrap=True), Col("age", "right"),
                   Col("attempts", "right", drop=2), Col("last error", wrap=True, drop=1)]
        console.print(fitted(columns, [[str(i.seq), i.message_id, i.subject, f"{i.as_dict()['age_s']:.1f}s",
                                        str(i.attempts), i.last_error[:60]] for i in items]))


@outbox_app.command("clear")
def outbox_clear(
    ctx: typer.Context,
    path: Path = typer.Option(None, "--path", help="Outbox file (default: <data_dir>/outbox-<id>.sqlite)."),
    yes: bool = typer.Option(False, "--yes", help="Really drop every waiting message."),
) -> None:
    """Drop everything waiting (they were never stored: they are lost)."""
    if not yes:
        fail("this drops messages that were never stored; repeat with --yes")
    box = _open(ctx, path)
    try:
        n = box.clear()
    finally:
        box.close()
    console.print(f"dropped {n} queued messages")


@outbox_app.command("flush")
def outbox_flush(
    ctx: typer.Context,
    path: Path = typer.Option(None, "--path", help="Outbox file (default: <data_dir>/outbox-<id>.sqlite)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Give up after this many seconds."),
    as_json: bool = JSON_OPT,
) -> None:
    """Send what waits now (oldest first, original message ids, so nothing is stored twice)."""
    from nxs_mesh import Mesh

    from .common import run

    s = settings(ctx)
    box = _open(ctx, path)
    before = len(box)

    async def flush() -> tuple[bool, int]:
        async with Mesh(s.config, ensure=False, outbox=box) as mesh:
            assert mesh.flusher is not None
            with err_console.status(f"sending {before} queued messages"):
                done = await mesh.flusher.wait_empty(timeout)
            return done, len(box)

    try:
        done, left = run(flush(), debug=s.debug)
    finally:
        box.close()
    if as_json:
        print_json({"sent": before - left, "waiting": left, "complete": done})
    else:
        console.print(f"sent {before - left}, {left} still waiting")
    if not done:
        fail(f"{left} messages still wait after {timeout}s (is JetStream quorum back?)")


def _open(ctx: typer.Context, path: Path | None):  # type: ignore[no-untyped-def]
    from nxs_mesh.client.outbox import Outbox, outbox_path

    s = settings(ctx)
    target = path or outbox_path(s.config.data_dir, s.config.instance_id)
    if not target.is_file():
        fail(f"no outbox at {target} (nothing was ever queued here; pass --path or --id)")
    try:
        return Outbox(target)
    except Exception as exc:  # sqlite3.DatabaseError: not an outbox file
        fail(f"{target}: cannot open as an outbox: {exc}", debug=s.debug, exc=exc)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")
    app.add_typer(outbox_app, name="outbox")
