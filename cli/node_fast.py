"""`nxs node run` without typer, rich or pydantic: the long-running worker loads what
``python -m nxs_mesh.node.worker`` loads (issue 14: ~8.5 MB of resident memory less).

``nxs_cli.app.main`` calls ``run_fast(argv)`` before it imports typer. When argv is
``[global options] node run [options]`` it maps the global options onto the worker's argparse entry
(``nxs_mesh.node.worker.main``, the same options as the Typer command) and exits with its status.
Anything else (``--help``, ``--version``, a global option given in a form not listed here) returns,
and the Typer app handles the command as before, so the fallback is always the full CLI.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

__all__ = ["quiet_tls_eof", "run_fast", "worker_argv"]

# The root app's global options that take a value (nxs_cli.root) -> the worker's option.
_GLOBAL_VALUED = {"--url": "--url", "-s": "--url", "--instance-id": "--id", "--id": "--id",
                  "--agent-id": "--agent-id", "--location": "--location", "--config": "--config", "-c": "--config"}
_HELP = frozenset({"-h", "--help"})


def quiet_tls_eof() -> None:
    """asyncio logs this for every TLS connection nats-py closes (its protocol returns True from
    eof_received, which SSL transports ignore): harmless, and noise on a secure mesh's every command."""
    logging.getLogger("asyncio").addFilter(lambda record: "eof_received" not in record.getMessage())


def worker_argv(argv: Sequence[str]) -> list[str] | None:
    """The worker's argv for ``[global options] node run [options]``; None when the Typer app should run it.

    Global options come first, so the command's own ``--id`` / ``--location`` / ``--config`` win (the
    worker's parser keeps the last value), as they do in the Typer command.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _GLOBAL_VALUED:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i, value = i + 1, argv[i + 1]
            out += [_GLOBAL_VALUED[name], value]
        elif arg == "--debug":
            out.append(arg)
        elif arg == "node" and argv[i + 1:i + 2] == ["run"]:
            rest = list(argv[i + 2:])
            return None if _HELP.intersection(rest) else out + rest
        else:
            return None
        i += 1
    return None


def run_fast(argv: Sequence[str]) -> None:
    """Run ``nxs node run`` on the worker's argparse entry and exit; return if argv is not that command."""
    worker = worker_argv(argv)
    if worker is None:
        return
    quiet_tls_eof()
    from nxs_mesh.node.worker import main

    sys.exit(main(worker, prog="nxs node run"))
