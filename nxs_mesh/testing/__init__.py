"""Pytest fixtures for agent authors (and our own suite): real nats-server processes on free ports.

Installed as a pytest plugin (entry point ``nxs_mesh``), so these are available in any project that
installs nxs-mesh:

    async def test_my_agent(mesh):
        ack = await mesh.publish("CHAT", "hi", to="other-node")
        assert ack.seq == 1

Fixtures: ``nats_server`` (one JetStream server, temp store), ``nats_cluster`` (three routed servers),
``mesh_config`` and ``mesh`` (a connected ``Mesh`` with the streams ensured), and ``mesh_factory``
for more clients on the same server. ``eventually`` waits for a condition with a deadline.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nxs_mesh.aio.waiting import wait_until
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.server import LocalCluster, NatsServer
from nxs_mesh.wire.errors import MeshTimeout

try:
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - only sync fixtures without pytest-asyncio
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = ["eventually", "mesh", "mesh_config", "mesh_factory", "nats_cluster", "nats_server", "unique_id"]


def unique_id(prefix: str = "t") -> str:
    """A fresh valid id (node, agent, durable) so tests never share names."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, or fail after ``timeout``.

    A predicate that itself times out (``MeshTimeout``: one slow answer from the server) is asked again
    until the deadline, and the deadline's failure names its last error: only the deadline ends the wait.
    (It used to end at the first such error, reported as if the deadline had passed.)"""
    errors: list[MeshTimeout] = []

    async def attempt() -> Any:
        try:
            value = predicate()
            return await value if inspect.isawaitable(value) else value
        except MeshTimeout as exc:
            errors.append(exc)
            return None

    try:
        return await wait_until(attempt, timeout, what or str(predicate), interval)
    except MeshTimeout as exc:
        last = f" (last error: {errors[-1]})" if errors else ""
        raise AssertionError(f"condition not met: {exc}{last}") from None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A JetStream nats-server on a random loopback port with its store in ``tmp_path``."""
    srv = NatsServer(store_dir=tmp_path / "nats", name=unique_id("srv"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three routed JetStream servers on loopback (n1, n2, n3), healthy before the test starts."""
    cluster = LocalCluster(3, base_dir=tmp_path / "cluster", name=unique_id("c"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def mesh_config(nats_server: NatsServer, tmp_path: Path) -> MeshConfig:
    return MeshConfig(servers=(nats_server.url,), instance_id=unique_id("node"), agent_id="main",
                      data_dir=str(tmp_path / "data"))


@_async_fixture
async def mesh_factory(mesh_config: MeshConfig) -> AsyncIterator[Callable[..., Awaitable[Mesh]]]:
    """``await mesh_factory(instance_id="a")``: more connected clients, all closed after the test."""
    opened: list[Mesh] = []

    async def make(**overrides: Any) -> Mesh:
        m = await Mesh(mesh_config, **overrides).connect()
        opened.append(m)
        return m

    try:
        yield make
    finally:
        for m in reversed(opened):
            await m.close()


@_async_fixture
async def mesh(mesh_factory: Callable[..., Awaitable[Mesh]]) -> Mesh:
    return await mesh_factory()
