"""The `nxs` Typer application: global options here, commands in one module per area.

Each command module exposes ``register(app)``. Modules: core (up, pub, tail, streams, init, dlq,
config), node (node run, nodes, status, cmd, ping, task, alerts, doctor, top, demo), cluster (deploy,
outbox), bench.
"""

from __future__ import annotations

import importlib

import typer

from .common import init_settings

app = typer.Typer(
    name="nxs",
    help="nxs-mesh: an agent mesh on NATS JetStream. Start with `nxs up`, then `nxs pub` / `nxs tail`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    ctx: typer.Context,
    url: str = typer.Option(None, "--url", "-s", help="NATS server URL(s), comma-separated (env NXS_URL)."),
    instance_id: str = typer.Option(None, "--instance-id", "--id", help="This node's id (env NXS_INSTANCE_ID)."),
    agent_id: str = typer.Option(None, "--agent-id", help="This agent's id (env NXS_AGENT_ID)."),
    location: str = typer.Option(None, "--location", help="Where this node runs (env NXS_LOCATION)."),
    config_file: str = typer.Option(None, "--config", "-c", help="TOML config file (env NXS_CONFIG)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    init_settings(ctx, url=url, instance_id=instance_id, agent_id=agent_id, location=location,
                  config_file=config_file, debug=debug)


_MODULES = ("core", "node", "cluster", "bench")
for _name in _MODULES:
    try:
        _mod = importlib.import_module(f"{__package__}.commands_{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__package__}.commands_{_name}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    app()
