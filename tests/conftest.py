"""Fixtures come from the nxs_mesh.testing plugin (installed with the package)."""


from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from node_support import Worker

from nxs_mesh.transport.server import NatsServer

# Files whose tests measure time (failure detection, heartbeat gaps, benches), use network namespaces
# or a browser, or run clusters of several servers: under a second test process on two cores their
# timeouts would measure the neighbour, so `make test` runs them serially after the parallel part.
ALONE_FILES = frozenset({
    "test_netns.py", "test_relay_netns.py", "test_secure_cluster.py", "test_cluster.py",
    "test_bench.py", "test_gateway_bench.py", "test_presence_bench.py", "test_presence.py",
    "test_presence_secure.py", "test_doctor.py", "test_contract.py", "test_console.py",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in ALONE_FILES:
            item.add_marker(pytest.mark.alone)


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
