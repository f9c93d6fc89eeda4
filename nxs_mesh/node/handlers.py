"""Command and task handlers: the registry, the built-ins, and loading user handlers.

A command handler answers a COMMAND ``{"command": name, "args": args}``; a task handler works on
the payload of a TASK of its capability. Both are coroutines taking ``(args)`` or ``(args, ctx)``
(or nothing); what they return is the RESULT content. Raise ``Retry``/``Reject`` to steer the ack,
any other exception is retried with backoff, then dead-lettered.

    registry = Registry()

    @registry.command("greet")
    async def greet(args, ctx):
        return f"hello {args} from {ctx.node_id}"

    @registry.task("resize")
    async def resize(payload, ctx):
        await ctx.in_progress()          # optional: the worker already keeps long handlers alive
        return {"done": payload}

User handlers come from ``module:object`` (``nxs node run --handlers mypkg.agent:registry``, found in
the current directory first, as ``python -m`` would) or the entry point group ``nxs_mesh.node.handlers``. The object may be a ``Registry`` (merged) or a callable
taking the registry (it registers what it wants).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

from nxs_mesh.client.delivery import Delivery, positional_arity
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.wire.envelope import Envelope, check_id
from nxs_mesh.wire.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "Context", "Registry", "builtin_registry", "call_handler", "load_handlers"]

ENTRY_POINT_GROUP = "nxs_mesh.node.handlers"

HandlerFn = Callable[..., Awaitable[Any]]


@dataclass
class Context:
    """What a handler may use besides its arguments."""

    node_id: str
    envelope: Envelope
    delivery: Delivery | None = None
    mesh: Mesh | None = None  # to publish, request, reply (the node's own connection)
    # The node's current STATUS content (the built-in `status` command answers with it).
    status: Callable[[], Awaitable[dict[str, Any]]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def in_progress(self) -> None:
        """Reset the message's ack timer now (long handlers get this automatically too)."""
        if self.delivery is not None:
            await self.delivery.in_progress()


class Registry:
    """Named command handlers and per-capability task handlers."""

    def __init__(self) -> None:
        self.commands: dict[str, HandlerFn] = {}
        self.tasks: dict[str, HandlerFn] = {}

    def __repr__(self) -> str:
        return f"<Registry commands={sorted(self.commands)} tasks={sorted(self.tasks)}>"

    def command(self, name: str | None = None) -> Callable[[HandlerFn], HandlerFn]:
        def register(fn: HandlerFn) -> HandlerFn:
            self.add_command(name or fn.__name__, fn)
            return fn

        return register

    def task(self, capability: str) -> Callable[[HandlerFn], HandlerFn]:
        def register(fn: HandlerFn) -> HandlerFn:
            self.add_task(capability, fn)
            return fn

        return register

    def add_command(self, name: str, fn: HandlerFn) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"command {name}", "a handler must be an `async def` function")
        self.commands[name] = fn

    def add_task(self, capability: str, fn: HandlerFn) -> None:
        check_id(capability, "capability")
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"task {capability}", "a handler must be an `async def` function")
        self.tasks[capability] = fn

    def merge(self, other: Registry) -> Registry:
        self.commands.update(other.commands)
        self.tasks.update(other.tasks)
        return self


async def call_handler(fn: HandlerFn, args: Any, ctx: Context) -> Any:
    n = positional_arity(fn, default=2)
    if n >= 2:
        return await fn(args, ctx)
    if n == 1:
        return await fn(args)
    return await fn()


# -- built-ins -------------------------------------------------------------------------------------
def _seconds(args: Any) -> float:
    value = args.get("seconds", 1) if isinstance(args, dict) else (args if args is not None else 1)
    if isinstance(value, list):
        value = value[0] if value else 1
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"sleep wants a number of seconds, got {value!r}") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"sleep seconds must be within 0..3600, got {seconds}")
    return seconds


async def _ping(args: Any, ctx: Context) -> Any:
    return {"pong": ctx.node_id, "time": datetime.now(UTC).isoformat()}


async def _status(args: Any, ctx: Context) -> Any:
    if ctx.status is None:
        return {"node": ctx.node_id}
    return await ctx.status()


async def _echo(args: Any, ctx: Context) -> Any:
    return args


async def _sleep(args: Any, ctx: Context) -> Any:
    seconds = _seconds(args)
    await asyncio.sleep(seconds)  # sleep-ok: this handler's job is to take time
    return {"slept": seconds, "node": ctx.node_id}


def builtin_registry() -> Registry:
    """``ping``, ``status``, ``echo``, ``sleep`` commands; ``echo`` and ``sleep`` task capabilities."""
    reg = Registry()
    reg.add_command("ping", _ping)
    reg.add_command("status", _status)
    reg.add_command("echo", _echo)
    reg.add_command("sleep", _sleep)
    reg.add_task("echo", _echo)
    reg.add_task("sleep", _sleep)
    return reg


# -- user handlers -----------------------------------------------------------------------------------
def _apply(obj: Any, registry: Registry, where: str) -> None:
    if isinstance(obj, Registry):
        registry.merge(obj)
    elif callable(obj):
        obj(registry)
    else:
        raise ConfigError("handlers", f"{where} is neither a Registry nor a callable taking one")


def load_handlers(registry: Registry, specs: tuple[str, ...] | list[str] = (), *, plugins: bool = True) -> Registry:
    """Add handlers from ``module:object`` specs and (if ``plugins``) the ``nxs_mesh.node.handlers`` entry points.

    A spec's module is looked for in the current directory first: the ``nxs`` console script's
    ``sys.path`` starts with its own directory, not the one it was started in.
    """
    if specs and not {"", os.getcwd()} & set(sys.path):
        sys.path.insert(0, os.getcwd())
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise ConfigError("handlers", f"{spec!r}: use module:object, e.g. mypkg.agent:registry")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError("handlers", f"cannot import {module_name!r}: {exc}") from None
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ConfigError("handlers", f"{module_name!r} has no {attr!r}") from None
        _apply(obj, registry, spec)
    if plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _apply(ep.load(), registry, f"entry point {ep.name}")
    return registry
