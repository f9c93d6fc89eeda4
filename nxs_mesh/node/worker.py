"""``python -m nxs_mesh.node.worker``: the worker, on argparse (no typer, rich or pydantic).

``nxs node run`` hands its argv here before the CLI loads typer (``nxs node run --help`` is the
CLI's), so both take the same options and load the same modules. Both read worker settings from the
config file's ``[node]`` table (the mesh settings then go in ``[mesh]``). Flags and environment win over the file.

    python -m nxs_mesh.node.worker --id nxs-node-001 --location vps-singapore --config /etc/nxs/nxs.toml
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tomllib
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from nxs_mesh.config import find_config_file, load_config
from nxs_mesh.node.handlers import Registry, load_handlers
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.wire.errors import ConfigError, MeshError

__all__ = ["add_sap", "build_node", "main", "read_node_table", "with_handoff"]

_NODE_KEYS = ("heartbeat_interval", "dead_after", "grace", "task_ack_wait", "doctor", "doctor_slots", "capabilities",
              "agents", "handlers")


def read_node_table(explicit: str | None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``[node]`` table of the config file in use, or {}."""
    path = find_config_file(explicit, os.environ if env is None else env)
    if path is None:
        return {}
    try:
        table = tomllib.loads(path.read_text()).get("node", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("config", f"{path}: {exc}") from None
    unknown = set(table) - set(_NODE_KEYS)
    if unknown:
        raise ConfigError(f"{path}:[node]", f"unknown {', '.join(sorted(unknown))}; known: {', '.join(_NODE_KEYS)}")
    return dict(table)


def build_options(table: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[NodeOptions, list[str]]:
    """Merge the file's [node] table with explicit values (None = not given); returns options and handler specs."""
    values = {k: v for k, v in {**table, **{k: v for k, v in given.items() if v is not None}}.items()
              if k != "handlers"}
    values["capabilities"] = tuple(values.get("capabilities") or ())
    values["agents"] = tuple(values.get("agents") or ())
    try:
        return NodeOptions(**values), list(table.get("handlers", ()))
    except TypeError as exc:
        raise ConfigError("node", str(exc)) from None


def build_node(
    *, config_file: str | None, flags: Mapping[str, Any], given: Mapping[str, Any], handlers: Sequence[str],
    plugins: bool = True, handoff: bool | None = None, max_agents: int = 0,
) -> Node:
    config, _ = load_config(flags, config_file=config_file)
    options, file_handlers = build_options(read_node_table(config_file), given)
    registry = load_handlers(Registry(), [*file_handlers, *handlers], plugins=plugins)
    return with_handoff(Node(config, options, registry), handoff, max_agents)


def with_handoff(node: Node, enabled: bool | None, max_agents: int = 0) -> Node:
    """Add the handoff service (give and take agents; ``node.handoff``) unless disabled. Default: on,
    except on a secure mesh, whose nodes may not create the consumers it needs (admin would provision them)."""
    if enabled is None:
        enabled = not node.config.secure
    if enabled:
        from nxs_mesh.node.handoff import HandoffService

        node.parts.append(HandoffService(max_agents=max_agents))
    return node


def add_sap(node: Node, sap: bool = True) -> Node:
    """``--sap``: the node's agents behind a Synadia front door (``node.sap``), imported only then: the
    protocol's SDKs load pydantic, which an idle worker otherwise never does."""
    if sap:
        from nxs_mesh.node.sap import SapFrontDoor

        SapFrontDoor.attach(node)
    return node


def _parser(prog: str) -> argparse.ArgumentParser:
    # The same options as the CLI's `nxs node run` (cli/commands_node.py), which hands its argv here.
    p = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n")[0])
    p.add_argument("--id", dest="instance_id", help="This node's id (default: NXS_INSTANCE_ID / host name).")
    p.add_argument("--location", help="Where it runs, e.g. vps-singapore.")
    p.add_argument("--url", dest="servers", help="NATS server URL(s), comma-separated (env NXS_URL).")
    p.add_argument("--agent-id", help="This agent's id (env NXS_AGENT_ID).")
    p.add_argument("--config", "-c", help="TOML config file (env NXS_CONFIG).")
    p.add_argument("--handlers", action="append", default=[], help="User handlers: module:object (repeatable).")
    p.add_argument("--capability", "-C", action="append", default=[], help="Task capability to take (repeatable).")
    p.add_argument("--agent", "-a", action="append", default=[],
                   help="An agent this node runs, registered in NXS_AGENTS (repeatable).")
    # A string default is parsed by `type` (a bad environment value is a usage error, exit 2).
    p.add_argument("--heartbeat", type=float, default=os.environ.get("NXS_HEARTBEAT_INTERVAL") or None,
                   help="Heartbeat interval (s) [1] (env NXS_HEARTBEAT_INTERVAL).")
    p.add_argument("--dead-after", type=float, default=os.environ.get("NXS_DEAD_AFTER") or None,
                   help="Doctor: dead after this silence (s) [5] (env NXS_DEAD_AFTER).")
    p.add_argument("--grace", type=float, help="On SIGTERM, how long in-flight work may take (s) [10].")
    p.add_argument("--task-ack-wait", type=float, help="Ack wait of task deliveries (s) [30].")
    p.add_argument("--doctor", action=argparse.BooleanOptionalAction, default=None,
                   help="Run the Doctor in this worker [yes].")
    p.add_argument("--handoff", action=argparse.BooleanOptionalAction, default=None,
                   help="Give and take agents by handoff (`nxs handoff`) [yes; no on a secure mesh].")
    p.add_argument("--max-agents", type=int, default=0,
                   help="Handoff: refuse offers beyond this many agents (0 = no limit) [0].")
    p.add_argument("--sap", action="store_true",
                   help="Serve this node's agents over the Synadia Agent Protocol (needs a `prompt` command).")
    p.add_argument("--plugins", action=argparse.BooleanOptionalAction, default=True,
                   help="Load nxs_mesh.node.handlers entry points.")
    p.add_argument("--log-level", default="INFO", help="Log level on stderr.")
    p.add_argument("--debug", action="store_true", help="Show tracebacks on errors.")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m nxs_mesh.node.worker") -> int:
    a = _parser(prog).parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given = {"heartbeat_interval": a.heartbeat, "dead_after": a.dead_after, "grace": a.grace,
             "task_ack_wait": a.task_ack_wait, "doctor": a.doctor, "capabilities": tuple(a.capability) or None,
             "agents": tuple(a.agent) or None}
    flags = {"servers": a.servers, "instance_id": a.instance_id, "agent_id": a.agent_id, "location": a.location}
    try:
        node = add_sap(build_node(config_file=a.config, handlers=a.handlers, plugins=a.plugins, given=given,
                                  flags=flags, handoff=a.handoff, max_agents=a.max_agents), a.sap)
        asyncio.run(node.serve(on_ready=_ready))
    except MeshError as exc:
        if a.debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0


def _ready(node: Node) -> None:
    sys.stdout.write(f"ready node={node.node_id} epoch={node.epoch} "
                     f"server={node.mesh.connected_url if node.mesh else '-'}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
