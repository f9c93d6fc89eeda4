"""The `nxs` Typer application: global options here, commands in one module per area.

Each command module exposes ``register(app)``. Modules: core (up, pub, tail, streams, init, dlq,
config), node (node run, nodes, status, cmd, ping, task, alerts, doctor, top, demo), cluster (deploy,
outbox), files (file put/get/ls/info/rm), agents (agents), bench.
"""

from __future__ import annotations

import importlib
import sys

import typer

from .common import init_settings, new_typer

_app = new_typer(
    name="nxs",
    help="nxs-mesh: an agent mesh on NATS JetStream. Start with `nxs up`, then `nxs pub` / `nxs tail`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from nxs_mesh.version import VERSION  # the installed distribution's version (one home)

        typer.echo(f"nxs-mesh {VERSION}")
        raise typer.Exit()


@_app.callback()
def _global(
    ctx: typer.Context,
    url: str = typer.Option(None, "--url", "-s", help="NATS server URL(s), comma-separated (env NXS_URL)."),
    instance_id: str = typer.Option(None, "--instance-id", "--id", help="This node's id (env NXS_INSTANCE_ID)."),
    agent_id: str = typer.Option(None, "--agent-id", help="This agent's id (env NXS_AGENT_ID)."),
    location: str = typer.Option(None, "--location", help="Where this node runs (env NXS_LOCATION)."),
    config_file: str = typer.Option(None, "--config", "-c", help="TOML config file (env NXS_CONFIG)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    _version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                  help="Print the installed nxs-mesh version and exit."),
) -> None:
    init_settings(ctx, url=url, instance_id=instance_id, agent_id=agent_id, location=location,
                  config_file=config_file, debug=debug)


_MODULES = ("core", "node", "cluster", "secure", "files", "agents", "bench", "grant")
# Commands whose module is known: `nxs node run` then loads only the node module (no bench, deploy or
# core commands and what they import), which keeps the long-running worker's RSS down. Any other
# command, and `nxs --help`, registers every module, so an unlisted (new) command still works.
_OWNER: dict[str, str] = {name: "node" for name in (
    "node", "task", "doctor", "nodes", "status", "cmd", "ping", "alerts", "top", "demo")} | {"file": "files", "agents": "agents"}
# Global options that take a value (see _global), to find the command name in argv.
_VALUED = frozenset({"--url", "-s", "--instance-id", "--id", "--agent-id", "--location", "--config", "-c"})
_registered: set[str] = set()


def _register(modules: tuple[str, ...] = _MODULES) -> typer.Typer:
    for name in modules:
        if name in _registered:
            continue
        _registered.add(name)
        try:
            mod = importlib.import_module(f"{__package__}.commands_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.commands_{name}":
                raise
            continue
        mod.register(_app)
    return _app


def _command_name(argv: list[str]) -> str | None:
    args = iter(argv)
    for arg in args:
        if arg in _VALUED:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def __getattr__(name: str) -> typer.Typer:
    # `from nxs_cli.app import app` (tests, embedding) gets the app with every command registered.
    if name == "app":
        return _register()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    owner = _OWNER.get(_command_name(sys.argv[1:]) or "")
    _register((owner,) if owner else _MODULES)()
