"""The root Typer app of `nxs`: its global options. Commands are registered by ``nxs_cli.app``."""

from __future__ import annotations

import typer

from .common import init_settings, new_typer

__all__ = ["app"]

app = new_typer(
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


@app.callback()
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
