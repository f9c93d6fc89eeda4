"""A node's voice: its heartbeat loop and its STATUS (mixed into ``Node``).

A HEARTBEAT (``nxs.heartbeat.<node>``) goes out every interval, plain publish and small (the idle
traffic budget): epoch, counter, state, in-flight count and the claimed tasks. The STATUS (last value
per node on ``nxs.status.<node>``) carries the rest and is republished on every state change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from nxs_mesh.version import VERSION
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import encode, new_envelope
from nxs_mesh.wire.errors import MeshError

if TYPE_CHECKING:
    from nxs_mesh.client.consumer import Consumer
    from nxs_mesh.client.mesh import Mesh
    from nxs_mesh.config import MeshConfig
    from nxs_mesh.node.handlers import Registry
    from nxs_mesh.node.options import NodeOptions, NodeState
    from nxs_mesh.node.tasks import TaskRunner

__all__ = ["Beacon"]

log = logging.getLogger("nxs_mesh.node")


class Beacon:
    """Heartbeat and status; needs the ``Node``'s mesh, options, state and counters."""

    if TYPE_CHECKING:
        config: MeshConfig
        options: NodeOptions
        registry: Registry
        mesh: Mesh | None
        tasks: TaskRunner | None
        epoch: str
        _hb_seq: int
        _started_at: str
        _started_mono: float
        _queue_depth: int
        _last_state: str
        _beat_now: asyncio.Event
        _status_now: asyncio.Event

        @property
        def node_id(self) -> str: ...
        @property
        def state(self) -> NodeState: ...
        @property
        def inflight(self) -> int: ...
        @property
        def capabilities(self) -> tuple[str, ...]: ...
        @property
        def problems(self) -> dict[str, str]: ...
        @property
        def consumers(self) -> list[Consumer]: ...

    def _health_changed(self) -> None:
        """A loop died or recovered somewhere in this node: tell the mesh now, not at the next round."""
        self._beat_now.set()
        self._status_now.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._beat()
            except MeshError as exc:
                log.debug("heartbeat failed: %s", exc)  # a missed beat is replaced next interval
            self._beat_now.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.options.heartbeat_interval)

    async def _beat(self) -> None:
        """One heartbeat, plain publish (no JetStream ack round trip: a lost beat is replaced next interval)."""
        assert self.mesh is not None
        self._hb_seq += 1
        # Small on purpose (idle traffic budget): the rest is in the status.
        content: dict[str, Any] = {"epoch": self.epoch, "seq": self._hb_seq, "state": str(self.state)}
        if self.inflight:
            content["inflight"] = self.inflight
        if self.tasks is not None and self.tasks.claims:
            content["claims"] = dict(self.tasks.claims)
        env = new_envelope("HEARTBEAT", content, source=self.mesh.source, ttl=0)
        await self.mesh.publish_now(subjects.heartbeat(self.node_id), encode(env))
        if "claims" in content:
            await self.mesh.flush(timeout=2)  # a claim must be known before its work starts

    def status(self) -> dict[str, Any]:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        mesh = self.mesh
        problems = self.problems
        return {
            "state": str(self.state), "version": VERSION, "epoch": self.epoch, "started_at": self._started_at,
            "uptime": round(time.monotonic() - self._started_mono, 1) if self._started_mono else 0.0,
            "load": round(load, 2), "inflight": self.inflight, "queue_depth": self._queue_depth,
            "agents": list(self.options.agents or (self.config.agent_id,)), "location": self.config.location,
            "server": mesh.connected_url if mesh else None,
            "path": mesh.server_path if mesh else "disconnected",
            "outbox": len(mesh.outbox) if mesh and mesh.outbox is not None else 0, "host": socket.gethostname(),
            "pid": os.getpid(), "capabilities": list(self.capabilities), "commands": sorted(self.registry.commands),
            "heartbeat_interval": self.options.heartbeat_interval, "dead_after": self.options.dead_after,
            **({"problems": problems} if problems else {}),
        }

    async def current_status(self) -> dict[str, Any]:
        """The status with a fresh queue depth (asks the server): what the `status` command answers."""
        await self.refresh_queue_depth()
        return self.status()

    async def _publish_status(self) -> None:
        assert self.mesh is not None
        status = self.status()
        await self.mesh.publish("STATUS", status, ttl=0)
        self._last_state = status["state"]

    async def refresh_queue_depth(self) -> int:
        """Messages waiting for (or held by) this node's consumers; asks the server (the `status` command)."""
        depth = 0
        for c in self.consumers:
            depth += await c.queue_depth()
        self._queue_depth = depth
        return depth

    async def _status_loop(self) -> None:
        while True:
            self._status_now.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._status_now.wait(), self.options.status_every)
            try:
                await self._publish_status()
            except MeshError as exc:
                log.debug("status publish failed: %s", exc)  # best effort: the next round retries
