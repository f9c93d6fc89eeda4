"""The ``handoff`` COMMAND: a non-Python client (the OpenClaw plugin's ``nxs_handoff`` tool, nats.js, curl
through a gateway) asks a node to run ``mesh.handoff`` for it instead of speaking the SYNC protocol itself.

    COMMAND {"command": "handoff", "args": {"agent": "agent:research", "to": "nxs-node-002",
                                            "context": {...}?, "timeout": 30?}}
    RESULT  {"agent", "from", "to", "epoch", "ready", "drained", "released", "steps"}
            or error "HandoffRefused: ..." / "HandoffTimeout: ..." / "AgentNotFound: ..." / "bad handoff args: ..."

Any node with a ``HandoffService`` answers it, not only the agent's owner: the protocol is caller-driven
(``client.handoff``), so the node that runs the command is just the caller, and the one truth is the
registry record it reads. Clients send it to the owner by default (that node is known to be up). A failed
handoff is answered at once and not retried (``Reject``): a retry would start a second handoff.

On a secure node the command policy applies (``node.authorize``): ``handoff`` is not in the default
read-only set, so only the admin, a ``[[policy.allow]]`` rule listing ``handoff``, or an admin-signed grant
may run it; anyone else gets "not authorized" in the RESULT.
"""

from __future__ import annotations

from typing import Any, Final

from nxs_mesh.node.handlers import Context, Registry
from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import ClosedError, MeshError, Reject

__all__ = ["COMMAND", "add_handoff_command", "handoff_args"]

COMMAND: Final = "handoff"
_MAX_TIMEOUT: Final = 300.0


def handoff_args(args: Any) -> tuple[str, str, Any, float]:
    """(agent, to, context, timeout) from the command's args; ValueError naming what is wrong."""
    if not isinstance(args, dict):
        raise ValueError('args must be {"agent": id, "to": node, "context"?: any, "timeout"?: seconds}')
    unknown = sorted(set(args) - {"agent", "to", "context", "timeout"})
    if unknown:
        raise ValueError(f"unknown argument {', '.join(unknown)}; expected agent, to, context, timeout")
    agent, to = args.get("agent"), args.get("to")
    if not isinstance(agent, str) or not isinstance(to, str):
        raise ValueError('"agent" and "to" are required strings (an agent id and a node id)')
    timeout = args.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= _MAX_TIMEOUT:
        raise ValueError(f'"timeout" must be a number of seconds in (0, {_MAX_TIMEOUT:.0f}], got {timeout!r}')
    return check_id(agent, "agent"), check_id(to, "to"), args.get("context"), float(timeout)


async def _handoff(args: Any, ctx: Context) -> dict[str, Any]:
    try:
        agent, to, context, timeout = handoff_args(args)
    except (ValueError, MeshError) as exc:  # MeshError: an id check_id refused
        raise Reject(f"bad handoff args: {exc}") from exc
    if ctx.mesh is None:
        raise ClosedError("the node has no connection")
    try:
        done = await ctx.mesh.handoff(agent, to=to, context=context, timeout=timeout)
    except MeshError as exc:  # refused, timed out, no such agent: the RESULT's error, not a retry
        raise Reject(f"{type(exc).__name__}: {exc}") from exc
    return {"agent": done.agent, "from": done.from_node, "to": done.to_node, "epoch": done.epoch,
            "ready": done.ready, "drained": done.drained, "released": done.released, "steps": done.steps}


def add_handoff_command(registry: Registry) -> None:
    """Register ``handoff`` unless the node's own code registered a command of that name."""
    if COMMAND not in registry.commands:
        registry.add_command(COMMAND, _handoff)
