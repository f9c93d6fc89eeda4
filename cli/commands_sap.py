"""`nxs prompt AGENT TEXT` and `nxs agents --sap`: agents that speak the Synadia Agent Protocol."""

from __future__ import annotations

import sys
from typing import Any

import typer

from .common import console, open_mesh, print_json, run, say, settings
from .tables import Col, fitted

SAP_OPT = typer.Option(False, "--sap", help="List Synadia-protocol agents ($SRV.INFO.agents) instead of the "
                       "mesh's registry.")


def list_sap(ctx: typer.Context, as_json: bool) -> None:
    """`nxs agents --sap`: every protocol agent instance answering discovery on this server."""
    s = settings(ctx)

    async def go() -> list[Any]:
        async with open_mesh(ctx) as mesh:
            return await mesh.sap.list()

    found = run(go(), debug=s.debug)
    if as_json:
        print_json([i.as_dict() for i in found])
        return
    if not found:
        say("no Synadia-protocol agents answer discovery (serve mesh agents with `nxs node run --sap`)")
        return
    cols = [Col("agent"), Col("owner"), Col("session"), Col("instance", drop=2), Col("version", drop=1),
            Col("description", wrap=True, drop=3)]
    rows = [[i.agent, i.owner, i.session, i.instance_id, i.version, i.description or "-"] for i in found]
    console.print(fitted(cols, rows, title="Synadia-protocol agents ($SRV.INFO.agents)"))


def prompt(
    ctx: typer.Context,
    agent: str = typer.Argument(..., help="agent, agent.owner, agent.owner.session (see `nxs agents --sap`), "
                                "or an instance id."),
    text: str = typer.Argument(..., help="The prompt."),
    timeout: float = typer.Option(60.0, "--timeout", help="Give up when the reply is silent this long (s)."),
    message_id: str = typer.Option(None, "--message-id", help="Dedup key: an nxs front door runs a prompt "
                                   "with the same key once and answers again with the first reply."),
    priority: int = typer.Option(None, "--priority", "-p", min=0, max=9, help="Priority 0..9 (nxs front doors)."),
) -> None:
    """Prompt a Synadia-protocol agent and print its reply as it streams."""
    s = settings(ctx)
    fields = {k: v for k, v in {"message_id": message_id, "priority": priority}.items() if v is not None}

    async def go() -> None:
        async with open_mesh(ctx) as mesh:
            async for part in mesh.sap.prompt(agent, text, timeout=timeout, **fields):
                sys.stdout.write(part)
                sys.stdout.flush()
        sys.stdout.write("\n")

    run(go(), debug=s.debug)


def register(app: typer.Typer) -> None:
    app.command("prompt")(prompt)
