"""The `nxs` entry point: global options in root.py, commands in one module per area.

Each command module exposes ``register(app)``. Modules: core (up, pub, tail, streams, init, dlq,
config), node (node run, nodes, status, cmd, ping, task, alerts, doctor, top, demo), cluster (deploy,
outbox), files (file put/get/ls/info/rm), agents (agents), sap (prompt), bench, gateway (gateway).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

# Nothing here imports typer or rich at module level: `nxs node run` (the long-running worker) is
# handed to the worker's own argparse entry before either loads (see nxs_cli.node_fast).

_MODULES = ("core", "node", "cluster", "secure", "files", "agents", "sap", "bench", "grant", "gateway")
# Commands whose module is known: `nxs node run` then loads only the node module (no bench, deploy or
# core commands and what they import), which keeps the long-running worker's RSS down. Any other
# command, and `nxs --help`, registers every module, so an unlisted (new) command still works.
_OWNER: dict[str, str] = {name: "node" for name in (
    "node", "task", "doctor", "nodes", "status", "cmd", "ping", "alerts", "top", "demo")} | {
    "file": "files", "agents": "agents", "prompt": "sap", "gateway": "gateway"}
# Global options that take a value (see _global), to find the command name in argv.
_VALUED = frozenset({"--url", "-s", "--instance-id", "--id", "--agent-id", "--location", "--config", "-c"})
_registered: set[str] = set()


def _register(modules: tuple[str, ...] = _MODULES) -> typer.Typer:
    from .root import app as _app

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
    if _command_name(sys.argv[1:]) == "node":
        from .node_fast import run_fast

        run_fast(sys.argv[1:])  # exits when it is `node run` without --help; returns otherwise
    owner = _OWNER.get(_command_name(sys.argv[1:]) or "")
    _register((owner,) if owner else _MODULES)()
