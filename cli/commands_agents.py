"""`nxs agents`: where each agent lives (the registry bucket NXS_AGENTS)."""

from __future__ import annotations

from typing import Any

import typer
from rich.text import Text

from .commands_sap import SAP_OPT, list_sap
from .common import JSON_OPT, console, open_mesh, print_json, run, say, settings
from .node_views import _age
from .tables import Col, fitted

_STATE_STYLE = {"active": "green", "standby": "dim", "handing-off": "yellow", "orphaned": "bold red"}


def agents(ctx: typer.Context, as_json: bool = JSON_OPT, sap: bool = SAP_OPT) -> None:
    """List registered agents: owner instance, state (active, standby, handing-off, orphaned), ownership
    epoch and age (time in that state). Nodes register theirs with `nxs node run --agent ID`; send to
    one wherever it lives with `nxs pub chat --agent ID TEXT`; move one to another node with
    `nxs handoff ID --to NODE`. `--sap`: Synadia-protocol agents instead."""
    if sap:
        list_sap(ctx, as_json)
        return
    s = settings(ctx)

    async def go() -> list[Any]:
        async with open_mesh(ctx) as mesh:
            return await mesh.agents.list()

    records = run(go(), debug=s.debug)
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    if not records:
        say("no agents registered (start a worker with `nxs node run --agent ID`)")
        return
    cols = [Col("agent"), Col("owner"), Col("state"), Col("epoch", "right"), Col("age", "right"),
            Col("capabilities", wrap=True, drop=1)]
    rows = [[r.agent, r.owner, Text(str(r.state), style=_STATE_STYLE.get(str(r.state), "")), str(r.epoch),
             _age(r.age()), ", ".join(r.capabilities) or "-"] for r in records]
    console.print(fitted(cols, rows, title="agents (NXS_AGENTS)"))


def register(app: typer.Typer) -> None:
    from .commands_handoff import handoff

    app.command("agents")(agents)
    app.command("handoff")(handoff)
