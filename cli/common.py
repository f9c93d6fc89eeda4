"""Shared CLI plumbing: global options -> a frozen MeshConfig, error reporting, JSON output, async runner.

Every command gets its configuration through ``settings(ctx)`` and runs library code through
``run(coro)``, which turns ``MeshError`` into a one-line message on stderr and a non-zero exit code
(no traceback unless ``--debug``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from nxs_mesh.config import ConfigSource, MeshConfig, load_config
from nxs_mesh.wire.errors import MeshError

from .node_fast import quiet_tls_eof

quiet_tls_eof()

T = TypeVar("T")

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich ``Console`` made on first use: `nxs node run`, the long-running worker, prints through
    plain stdout and so never loads rich (~1.5 MB of its resident memory)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def _made(self) -> Console:
        made = self._console
        if made is None:
            from rich.console import Console

            made = self._console = Console(**self._options)
        return made

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    # Special methods skip __getattr__: rich's Live uses its console as a context manager.
    def __enter__(self) -> Console:
        return self._made().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._made().__exit__(*exc)


console: Console = _LazyConsole()  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


@dataclass(frozen=True)
class Settings:
    """What the global options resolved to, made once before any library code runs."""

    config: MeshConfig
    sources: dict[str, ConfigSource]
    debug: bool = False


def init_settings(
    ctx: typer.Context,
    *,
    url: str | None,
    instance_id: str | None,
    agent_id: str | None,
    location: str | None,
    config_file: str | None,
    debug: bool,
) -> None:
    flags = {"servers": url, "instance_id": instance_id, "agent_id": agent_id, "location": location}
    # Config errors are reported when a command needs the config, so `--help` always works.
    ctx.obj = {"flags": flags, "config_file": config_file, "debug": debug}


def settings(ctx: typer.Context) -> Settings:
    root = ctx.find_root()
    obj = root.obj or {}
    if isinstance(obj, Settings):
        return obj
    try:
        cfg, sources = load_config(obj.get("flags"), config_file=obj.get("config_file"))
    except MeshError as exc:
        fail(str(exc), debug=obj.get("debug", False), exc=exc)
    resolved = Settings(cfg, sources, bool(obj.get("debug", False)))
    root.obj = resolved
    return resolved


def fail(message: str, *, code: int = 1, debug: bool = False, exc: BaseException | None = None) -> NoReturn:
    from rich.markup import escape

    if debug and exc is not None:
        err_console.print_exception()
    # soft_wrap: one line however long (scripts grep it); escape: the message is not Rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T], *, debug: bool = False, quiet_interrupt: bool = False) -> T:
    """Run library code; MeshError -> clean message + exit 1; Ctrl-C -> exit 130.

    ``quiet_interrupt``: Ctrl-C is the normal way to end this command (``tail -f``): exit 0, no message.
    """
    try:
        return asyncio.run(coro)
    except MeshError as exc:
        fail(str(exc), debug=debug, exc=exc)
    except KeyboardInterrupt:
        if quiet_interrupt:
            raise typer.Exit(0) from None
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def print_json(value: Any) -> None:
    """One JSON document per line on stdout (for scripts)."""
    sys.stdout.write(json.dumps(value, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def parse_since(text: str) -> datetime:
    """'10m', '2h', '1d', '30s' or an ISO 8601 time -> an aware UTC datetime."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    if t and t[-1] in units and t[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(t[:-1]) * units[t[-1]])
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use a duration like 10m, 2h, 1d or an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


JSON_OPT = typer.Option(False, "--json", help="Machine-readable output on stdout.")

# Ports: one range for every port option and every port read from the environment or a config file.
PORT_MIN, PORT_MAX = 1, 65535


def new_typer(**options: Any) -> typer.Typer:
    """A Typer in the house style. Help text is plain text (``rich_markup_mode=None``): with Rich markup on,
    bracketed text such as ``[node] table`` or ``[min(3, servers)]`` is taken for a style tag and vanishes."""
    return typer.Typer(rich_markup_mode=None, **options)


def priority_option(default: int = 1) -> Any:
    """The one --priority option (0..9 as the wire contract says); out of range is a usage error (exit 2)."""
    return typer.Option(default, "--priority", "-p", min=0, max=9, help="0..9, higher is more urgent.")


def port_option(default: int | None, *flags: str, help: str) -> Any:
    """A TCP port option: 1..65535, anything else is a usage error (exit 2) before anything starts."""
    return typer.Option(default, *flags, min=PORT_MIN, max=PORT_MAX, help=help)


def check_port(port: int, where: str) -> int:
    """A port that did not come from a port option (environment, config file, arithmetic): same range,
    same usage error, naming where it came from."""
    if not PORT_MIN <= port <= PORT_MAX:
        raise typer.BadParameter(f"{port}: a port should be between {PORT_MIN} and {PORT_MAX}", param_hint=where)
    return port


def say(text: str, *, style: str | None = None, err: bool = False) -> None:
    """One line exactly as written (no wrapping, no markup from message content), flushed at once."""
    from rich.text import Text

    (err_console if err else console).print(Text(text, style=style or ""), soft_wrap=True, highlight=False)
    (sys.stderr if err else sys.stdout).flush()


def open_mesh(ctx: typer.Context, *, ensure: bool = False) -> Any:
    """A Mesh for this invocation's settings (not yet connected: use ``async with``)."""
    from nxs_mesh import Mesh

    return Mesh(settings(ctx).config, ensure=ensure)


def shorten(value: Any, width: int = 80) -> str:
    """Content on one line: JSON for non-strings, whitespace folded, cut to ``width`` with an ellipsis."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
