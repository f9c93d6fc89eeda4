"""A bench worker process embedding many nodes (``nxs bench scale``): one process, ``--count`` Nodes.

    python -c "from nxs_cli.bench.scale_worker import main; main()" --url URL --prefix P --count 50

Every node is a full ``Node`` (heartbeat, status, command consumer, a campaigning Doctor: the process
has one campaigner). Prints ``ready <n>`` on stdout once all run; SIGTERM or SIGINT stops them all
cleanly (status ``stopped``, lease released) and exits 0, also when it arrives during start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile

from nxs_mesh.config import MeshConfig
from nxs_mesh.node.node import Node, NodeOptions

__all__ = ["main", "run_nodes"]

_START_BATCH = 10  # nodes started at once: a whole process connecting at once only queues on 2 cores


async def run_nodes(url: str, prefix: str, count: int, *, heartbeat: float, dead_after: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    data_dir = tempfile.mkdtemp(prefix=f"nxs-scale-{prefix}-")
    options = NodeOptions(heartbeat_interval=heartbeat, dead_after=dead_after, outbox=False)
    nodes = [Node(MeshConfig(servers=(url,), instance_id=f"{prefix}-{i}", data_dir=data_dir), options)
             for i in range(count)]
    started: list[Node] = []
    try:
        for first in range(0, count, _START_BATCH):
            if stop.is_set():
                break
            batch = nodes[first:first + _START_BATCH]
            await asyncio.gather(*(n.start() for n in batch))
            started.extend(batch)
        sys.stdout.write(f"ready {len(started)}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await asyncio.gather(*(n.stop() for n in started), return_exceptions=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--dead-after", type=float, default=5.0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(run_nodes(a.url, a.prefix, a.count, heartbeat=a.heartbeat, dead_after=a.dead_after)))


if __name__ == "__main__":
    main()
