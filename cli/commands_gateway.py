"""`nxs gateway`: the HTTP/SSE gateway (nxs_mesh.gateway) in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from nxs_mesh.wire.errors import MeshError

from .common import fail, run, settings

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080', '[::1]:8080', 'localhost:0' (0: any free port) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise typer.BadParameter(f"{text!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _imports() -> Any:
    try:
        import nxs_mesh.gateway as gateway
    except ImportError as exc:
        fail(f"`nxs gateway` needs the gateway extra ({exc.name} is missing): pip install 'nxs-mesh[gateway]'")
    return gateway


async def _serve(server: Any, describe: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        sys.stdout.write(f"gateway listening on {server.url} ({describe}); Ctrl-C stops it\n")
        sys.stdout.flush()
        ended = asyncio.ensure_future(server.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (ended, stopped):
            task.cancel()
    finally:
        await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def gateway(
    ctx: typer.Context,
    listen: str = typer.Option("127.0.0.1:8080", "--listen", "-l", help="HOST:PORT to serve HTTP on (port 0: any free port)."),
    url: str = typer.Option(None, "--url", "-s", help="NATS server URL(s), comma-separated (as the global --url)."),
    tokens: Path = typer.Option(None, "--tokens", help="TOML file mapping bearer tokens to mesh identities; "
                                "required to listen beyond loopback (see `nxs_mesh.gateway.auth`)."),
    cors: list[str] = typer.Option(None, "--cors", help="Allow browsers on this origin (repeatable), e.g. https://console.example."),
    max_body: int = typer.Option(1 << 20, "--max-body", min=1, help="Largest JSON body in bytes (413 above)."),
    max_file: int = typer.Option(None, "--max-file", min=1, help="Largest file upload in bytes (default: no limit; streamed)."),
    console_dir: Path = typer.Option(None, "--console", help="Serve this directory at / instead of the shipped web console."),
    no_console: bool = typer.Option(False, "--no-console", help="Serve no web console at / (the API only)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn's access log)."),
) -> None:
    """Serve the mesh over HTTP: publish, replay, Server-Sent Events, commands, tasks, files, nodes, alerts.

    The web console is at / (nodes, alerts, chat; open /#token=TOKEN with --tokens), the OpenAPI
    document at /openapi.json. Without --tokens everyone acts as this gateway's own
    identity, so it then listens on loopback only; with --tokens each caller acts as its identity,
    with that identity's credentials and server permissions.
    """
    host, port = parse_listen(listen)
    st = settings(ctx)
    cfg = st.config.replace(servers=url) if url else st.config
    if st.sources.get("instance_id") == "default":  # not the host name: the gateway is its own client
        cfg = cfg.replace(instance_id="gateway")
    if tokens is None and not is_loopback(host):
        fail(f"--listen {listen} without --tokens would let anyone who reaches it use the mesh as "
             f"{cfg.instance_id!r}: give --tokens FILE, or listen on 127.0.0.1")
    if console_dir is not None and not console_dir.is_dir():
        fail(f"--console {console_dir}: not a directory")
    gw = _imports()
    try:
        explicit = tuple(cfg.servers) if url or st.sources.get("servers") != "default" else None
        table = gw.TokenTable.load(tokens, cfg, servers=explicit) if tokens is not None else None
        console = None if no_console else str(console_dir) if console_dir else gw.CONSOLE_DIR
        options = gw.GatewayOptions(cors=tuple(cors or ()), max_body=max_body, max_file=max_file, console=console)
        app = gw.create_app(cfg, tokens=table, options=options)
    except MeshError as exc:
        fail(str(exc), debug=st.debug, exc=exc)
    describe = f"{len(table.identities)} identities from {tokens}" if table else f"open, as {cfg.instance_id}"
    server = gw.GatewayServer(app, host, port, access_log=access_log, log_level="info" if access_log else "warning")
    run(_serve(server, describe), debug=st.debug)


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway)
