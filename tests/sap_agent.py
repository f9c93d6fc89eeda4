"""Handlers for the worker processes of tests/test_sap_restart.py (`--handlers tests.sap_agent:registry`)."""

from __future__ import annotations

import asyncio
import logging

from nxs_mesh.node.handlers import Registry
from nxs_mesh.node.sap import sap_send
from nxs_mesh.wire.errors import Reject

registry = Registry()
log = logging.getLogger("sap_agent")


@registry.command("prompt")
async def prompt(args, ctx):
    text = args["prompt"]
    if text == "refuse":
        raise Reject(f"refused by {ctx.node_id}")
    if text == "hold" and ctx.delivery is not None and ctx.delivery.deliveries == 1:
        log.warning("holding %s", ctx.envelope.id)  # the test kills the process now
        await asyncio.Event().wait()
    await sap_send(ctx, f"{text}: ")
    return f"answered by {ctx.node_id} on delivery {ctx.delivery.deliveries if ctx.delivery else 0}"
