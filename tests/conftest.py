"""Fixtures come from the nxs_mesh.testing plugin (installed with the package)."""


from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from node_support import Worker

from nxs_mesh.transport.server import NatsServer


@pytest.fixture
def workers(nats_server: NatsServer, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start `nxs node run` processes on the test server; all are killed at the end."""
    started: list[Worker] = []

    def start(node_id: str, *extra: str, **timing: float) -> Worker:
        w = Worker(nats_server.url, node_id, tmp_path, *extra, **timing).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()
