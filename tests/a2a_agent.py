"""Handlers for the worker processes of tests/test_a2a.py (`--handlers tests.a2a_agent:registry`)."""

from __future__ import annotations

import asyncio

from nxs_mesh.node.handlers import Registry
from nxs_mesh.wire.errors import Reject

registry = Registry()


@registry.command("prompt")
async def prompt(args, ctx):
    """Answers with what it was told and the conversation (the A2A context id) it came in."""
    text = args["prompt"]
    if text == "refuse":
        raise Reject(f"refused by {ctx.node_id}")
    if text == "hold":  # until cancelled: the cancel test's
        await asyncio.Event().wait()
    conversation = ctx.envelope.payload.metadata.get("a2a_context_id")
    return f"{ctx.node_id} heard {text!r} in {conversation} (args say {args.get('context_id')})"
