"""The worker: one per node, or embedded in an agent's own asyncio program.

    node = Node(MeshConfig(instance_id="nxs-node-001"), NodeOptions(capabilities=("resize",)))

    @node.command("greet")
    async def greet(args, ctx):
        return f"hello {args}"

    @node.task("resize")
    async def resize(payload, ctx):
        return {"ok": True}

    async with node:                 # returns once RUNNING (heartbeating, consuming)
        await node.wait_stopped()    # or do the agent's own work

Lifecycle: STARTING -> RUNNING (DEGRADED while one of its loops is down and being restarted) ->
DRAINING -> STOPPED, published as the node's STATUS (last value
per node on ``nxs.status.<node>``). A HEARTBEAT (``nxs.heartbeat.<node>``) goes out every interval:
small (epoch = this incarnation's boot id, a counter, state, in-flight count, the claimed tasks).
Stopping (SIGTERM/SIGINT in ``serve()``): status ``draining``, consumers stop fetching and finish
in-flight work within ``grace``, heartbeats continue meanwhile (so no doctor calls it dead), then
status ``stopped`` (so nobody waits for a timeout), then the connection drains; the whole stop
takes ``grace`` plus a few seconds at most, even with no server to talk to. Heartbeat and status are
in ``node.beacon``, options in ``node.options``, pluggable parts in ``node.parts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nxs_mesh.aio.retry import retrying
from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.client.consumer import Consumer, durable_name
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.client.outbox import outbox_path
from nxs_mesh.client.window import DEFAULT_WINDOW
from nxs_mesh.config import MeshConfig
from nxs_mesh.node.agents import orphan_hook, register_agents, stand_by_agents
from nxs_mesh.node.beacon import Beacon
from nxs_mesh.node.commands import CommandRunner
from nxs_mesh.node.doctor import DeathHook, Doctor
from nxs_mesh.node.handlers import HandlerFn, Registry, builtin_registry
from nxs_mesh.node.options import NodeOptions, NodeState
from nxs_mesh.node.parts import NodePart
from nxs_mesh.node.path_watch import PathWatch
from nxs_mesh.node.task_ends import TaskEnds
from nxs_mesh.node.tasks import TaskRunner, TaskStore
from nxs_mesh.wire import subjects
from nxs_mesh.wire.errors import ClosedError, ConfigError, MeshError

__all__ = ["Node", "NodeOptions", "NodeState"]

log = logging.getLogger("nxs_mesh.node")

# Stopping publishes "draining" and "stopped" and drains the connection; each gets at most this long,
# so a node whose server is gone still stops within grace plus a few seconds.
_STOP_STEP = 2.0


class Node(Beacon):
    """A mesh worker: heartbeat + status, commands, tasks, and a Doctor."""

    def __init__(self, config: MeshConfig, options: NodeOptions | None = None, registry: Registry | None = None) -> None:
        self.config = config
        self.options = options or NodeOptions()
        self.registry = builtin_registry()
        if registry is not None:
            self.registry.merge(registry)
        self.epoch = uuid.uuid4().hex[:12]  # this incarnation
        self._state = NodeState.NEW
        self.mesh: Mesh | None = None
        self.doctor: Doctor | None = None
        # ``async hook(node_id) -> Mapping``, appended before start (on every node): see Doctor's death_hooks.
        self.death_hooks: list[DeathHook] = []
        self.tasks: TaskRunner | None = None
        # see node.parts; appended before start (PathWatch: a new server path is in the status at once)
        self.parts: list[NodePart] = [TaskEnds(), PathWatch(self._health_changed)]
        self._commands: Consumer | None = None
        self._hb_seq = 0
        self._started_mono = 0.0
        self._started_at = ""
        self._queue_depth = 0
        self._beat_now = asyncio.Event()
        self._status_now = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._sup = Supervisor(f"node {config.instance_id}", on_change=self._health_changed)
        self._capabilities = set(self.options.capabilities)
        self._last_state = ""

    def __repr__(self) -> str:
        server = self.mesh.connected_url if self.mesh else None
        return (f"<Node {self.config.instance_id!r} {self.state.name} "
                f"[server {server or '-'}, {len(self.consumers)} consumers, {self.inflight} inflight]>")

    # -- registration --------------------------------------------------------------------------------
    def command(self, name: str | None = None) -> Callable[[HandlerFn], HandlerFn]:
        return self.registry.command(name)

    def task(self, capability: str) -> Callable[[HandlerFn], HandlerFn]:
        """Register a task handler and declare the capability (before ``start``)."""
        self._capabilities.add(capability)
        return self.registry.task(capability)

    # -- views ---------------------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.config.instance_id

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(sorted(self._capabilities))

    @property
    def consumers(self) -> list[Consumer]:
        return ([self._commands] if self._commands else []) + (self.tasks.consumers if self.tasks else [])

    @property
    def inflight(self) -> int:
        cmd = self._commands.inflight if self._commands else 0
        return cmd + (self.tasks.inflight if self.tasks else 0)

    @property
    def problems(self) -> dict[str, str]:
        """What is down right now (a consumer or loop being restarted), by name, with its cause."""
        out = dict(self._sup.problems)
        for c in self.consumers:
            out.update({f"consumer {c.spec.durable}": why for why in c.problems.values()})
        if self.doctor is not None:
            out.update({f"doctor {k}": why for k, why in self.doctor.problems.items()})
        return out

    @property
    def state(self) -> NodeState:
        if self._state is NodeState.RUNNING and self.problems:
            return NodeState.DEGRADED
        return self._state

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> Node:
        """Connect, publish status, start heartbeats, consumers and the Doctor; returns once RUNNING."""
        if self._state is not NodeState.NEW:
            raise ClosedError(f"{self!r} cannot be started twice")
        missing = [c for c in self._capabilities if c not in self.registry.tasks]
        if missing:
            raise ConfigError("capabilities", f"no task handler for {', '.join(sorted(missing))}")
        self._state = NodeState.STARTING
        self._started_mono = time.monotonic()
        self._started_at = datetime.now(UTC).isoformat()
        patience = self.options.start_timeout
        outbox = outbox_path(self.config.data_dir, self.node_id) if self.options.outbox else None
        if outbox is not None:
            outbox.parent.mkdir(parents=True, exist_ok=True)
        self.mesh = await retrying(
            lambda: Mesh(self.config, outbox=outbox).connect(), "connect and ensure streams", timeout=patience
        )
        try:
            await self._start_parts(self.mesh, patience)
        except BaseException:
            await self._teardown(time.monotonic() + _STOP_STEP)
            raise
        log.info("node %s running (epoch %s, server %s)", self.node_id, self.epoch, self.mesh.connected_url)
        return self

    async def _start_parts(self, mesh: Mesh, patience: float) -> None:
        await retrying(self._publish_status, "status", timeout=patience)
        await register_agents(mesh, self.node_id, self.options.agents, capabilities=self.capabilities,
                              stale_after=3 * self.options.dead_after, timeout=patience)
        store = None
        if self._capabilities or self.options.doctor:
            store = await retrying(lambda: TaskStore.open(mesh), "task bucket", timeout=patience)
        self._sup.keep("heartbeat", self._heartbeat_loop)
        runner = CommandRunner(mesh, self.registry, max_deliver=self.config.max_deliver, status=self.current_status)

        async def consume_commands() -> Consumer:
            # A window: the node's backlog runs by priority (commands are the node's own, so holding
            # them costs no one); exactly once: a redelivery after a lost ack never runs a command again.
            return await mesh.consume(
                "command", runner.handle, durable=durable_name("command", self.node_id),
                filters=subjects.filters_for("command", self.node_id),
                batch=DEFAULT_WINDOW, window=DEFAULT_WINDOW, concurrency=self.options.command_concurrency,
                exactly_once=True, fetch_timeout=self.options.fetch_timeout, on_change=self._health_changed,
            )

        self._commands = await retrying(consume_commands, "command consumer", timeout=patience)
        if self._capabilities:
            assert store is not None
            self.tasks = TaskRunner(
                mesh, store, self.registry, epoch=self.epoch, capabilities=self.capabilities,
                ack_wait=self.options.task_ack_wait, concurrency=self.options.task_concurrency,
                fetch_timeout=self.options.fetch_timeout, on_claims=self._beat, status=self.current_status,
                start_timeout=patience, on_change=self._health_changed,
            )
            await self.tasks.start()
        for part in self.parts:
            await part.start(self)
        if self.options.doctor:
            self.doctor = await Doctor(
                mesh, dead_after=self.options.dead_after, interval=self.options.heartbeat_interval, store=store,
                on_change=self._health_changed, campaign=True, slots=self.options.doctor_slots,
                death_hooks=(*self.death_hooks, orphan_hook(mesh)),
            ).start()
        self._state = NodeState.RUNNING
        await retrying(self._publish_status, "status", timeout=patience)
        self._sup.keep("status", self._status_loop)

    async def stop(self) -> None:
        """Drain: stop fetching, finish in-flight work (``grace``), publish ``stopped``, close.

        Bounded: ``grace`` for the work, and a few seconds each for the two statuses and the drain,
        however unreachable the server is."""
        if self._state in (NodeState.NEW, NodeState.STOPPED):
            self._state = NodeState.STOPPED
            self._stopped.set()
            return
        if self._state is NodeState.DRAINING:
            await self._stopped.wait()
            return
        self._state = NodeState.DRAINING
        log.info("node %s draining (%d in flight)", self.node_id, self.inflight)
        await self._status_within(time.monotonic() + _STOP_STEP)
        self._beat_now.set()
        stops = [c.stop(self.options.grace) for c in ([self._commands] if self._commands else [])]
        if self.tasks is not None:
            stops.append(self.tasks.stop(self.options.grace))
        stops += [part.stop(self.options.grace) for part in self.parts]
        await asyncio.gather(*stops, return_exceptions=True)
        await self._teardown(time.monotonic() + _STOP_STEP)

    async def _teardown(self, deadline: float) -> None:
        if self.doctor is not None:
            await self.doctor.stop()
        await self._sup.stop(timeout=0)
        self._state = NodeState.STOPPED
        if self.mesh is not None:
            await stand_by_agents(self.mesh, self.node_id, self.options.agents)
            # "stopped" is what spares us a death alert: retry it through a leader election, briefly.
            await self._status_within(deadline)
            await asyncio.shield(self.mesh.close())
        self._stopped.set()
        log.info("node %s stopped", self.node_id)

    async def _status_within(self, deadline: float) -> None:
        """Publish the status, retried until ``deadline``; given up at once when not connected."""
        if self.mesh is None or not self.mesh.is_connected:
            return
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await retrying(self._publish_status, "status", timeout=max(0.1, deadline - time.monotonic()))
        except (MeshError, TimeoutError) as exc:
            log.warning("node %s: could not publish its %s status (%s)", self.node_id, self._state, exc)

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def serve(self, *, signals: bool = True, on_ready: Callable[[Node], Any] | None = None) -> None:
        """Start, run until SIGTERM/SIGINT (or ``request_stop()``), then drain and stop."""
        loop = asyncio.get_running_loop()
        installed = []
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._stop_requested.set)
                    installed.append(sig)
        try:
            await self.start()
            if on_ready is not None:
                on_ready(self)
            await self._stop_requested.wait()
        finally:
            await self.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)
