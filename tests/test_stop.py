"""Stopping is bounded (issue 10, item 12): with its server gone, a worker told SIGTERM exits within
``grace`` plus a few seconds (it took 12-17 s with grace 10 before: every status publish and the drain
waited out their own timeouts)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from node_support import Worker, wait_state

from nxs_mesh import Mesh
from nxs_mesh.testing import unique_id

GRACE = 2.0
# grace for the work, then at most ~2 s each for the "draining" status, the "stopped" status and the drain.
BOUND = GRACE + 3 * 2.0 + 1.0


async def test_sigterm_with_the_server_down_exits_within_grace(mesh: Mesh, nats_server, tmp_path: Path):
    nid = unique_id("stop")
    worker = Worker(nats_server.url, nid, tmp_path, "--grace", str(GRACE)).start()
    try:
        await wait_state(mesh, nid, "running")
        await mesh.close()
        nats_server.stop()
        t0 = time.monotonic()
        worker.signal(signal.SIGTERM)
        code = await worker.wait_exit(timeout=60)
        took = time.monotonic() - t0
        assert code == 0, worker.log()
        assert took < BOUND, f"took {took:.1f}s to stop (bound {BOUND}s)\n{worker.log()[-2000:]}"
    finally:
        worker.kill()
