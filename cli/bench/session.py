"""The benchmark session: one server (embedded unless a URL is given), mesh and raw nats-py clients.

Raw clients are plain ``nats.connect`` on purpose: they are the baseline the mesh is measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import itertools
import uuid
from dataclasses import dataclass
from types import TracebackType

import nats
from nats.aio.client import Client

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.server import NatsServer

__all__ = ["BenchOptions", "BenchSession"]


@dataclass(frozen=True)
class BenchOptions:
    """What to measure. ``messages`` sizes the throughput scenarios; latency ones take a share."""

    messages: int = 20_000
    size: int = 256
    rounds: int = 3
    batch: int = 32
    url: str | None = None
    monitor_url: str | None = None
    #: Footprint: settle after start-up, then the window idle traffic is counted over (seconds).
    settle: float = 2.0
    idle_window: float = 10.0
    #: Failure detection: how many kill -9 trials (the median is reported).
    failure_trials: int = 3
    #: Scale (``nxs bench scale``): mesh sizes, and nodes embedded per worker process.
    scale_nodes: tuple[int, ...] = (10, 50, 150, 300)
    scale_per_process: int = 50

    @property
    def latency_samples(self) -> int:
        return max(10, min(2_000, self.messages // 10))

    @property
    def sync_messages(self) -> int:
        # A synchronous publish waits one round trip each: fewer suffice for a stable rate.
        return max(10, self.messages // 4)


class BenchSession:
    """Owns the server (if embedded) and every client it hands out; closes them all on exit."""

    def __init__(self, options: BenchOptions) -> None:
        self.options = options
        self.server: NatsServer | None = None
        self.url = options.url or ""
        self.monitor_url = options.monitor_url
        self._meshes: list[Mesh] = []
        self._raws: list[Client] = []
        self._ids = itertools.count(1)
        self.run_id = uuid.uuid4().hex[:6]
        #: Set by ``nxs bench --profile``: the mesh side's timed block runs under it.
        self.profiler: cProfile.Profile | None = None

    def __repr__(self) -> str:
        return f"<BenchSession {self.url or '-'} [{len(self._meshes)} mesh, {len(self._raws)} raw clients]>"

    async def __aenter__(self) -> BenchSession:
        if not self.options.url:
            self.server = NatsServer(name=f"nxs-bench-{self.run_id}")
            await asyncio.to_thread(self.server.start)
            self.url = self.server.url
            self.monitor_url = self.monitor_url or self.server.monitor_url
        elif self.monitor_url is None:
            host = self.url.split("://", 1)[-1].split(",")[0].rsplit(":", 1)[0]
            self.monitor_url = f"http://{host}:8222"
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close_clients()
        if self.server is not None:
            server, self.server = self.server, None
            await asyncio.shield(asyncio.to_thread(server.cleanup))

    async def close_clients(self) -> None:
        meshes, self._meshes = self._meshes, []
        raws, self._raws = self._raws, []
        for m in meshes:
            with contextlib.suppress(Exception):
                await m.close()
        for nc in raws:
            with contextlib.suppress(Exception):
                await nc.close()

    def unique(self, prefix: str) -> str:
        """A fresh id valid as node id, agent id and durable name."""
        return f"{prefix}-{self.run_id}-{next(self._ids)}"

    def mesh_config(self, instance_id: str, **changes: object) -> MeshConfig:
        return MeshConfig(servers=(self.url,), instance_id=instance_id, agent_id="bench", **changes)  # type: ignore[arg-type]

    async def mesh(self, instance_id: str | None = None) -> Mesh:
        m = await Mesh(self.mesh_config(instance_id or self.unique("bench"))).connect()
        self._meshes.append(m)
        return m

    async def raw(self) -> Client:
        nc = await nats.connect(self.url, name=f"bench-raw-{self.run_id}", max_reconnect_attempts=0)
        self._raws.append(nc)
        return nc
