"""Footprint of an idle ``nxs node run`` worker: RSS, and the bytes per second it sends and receives;
and the RSS an extra embedded ``Node`` costs in a process that runs many.

Traffic is the server's own count (``/connz``: in_bytes/out_bytes of the node's connections) over a
fixed measurement window, after the node has announced itself with its first heartbeat. The embedded
figure is (RSS with 1 + EMBEDDED nodes - RSS with 1 node) / EMBEDDED, two ``scale_worker`` processes
measured after the same settle time.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from nxs_cli.bench.report import Row, skipped
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.worker import NOT_AVAILABLE, Worker, node_connections, rss_bytes, worker_available

from nxs_mesh.wire import subjects

__all__ = ["bench_footprint"]

RSS_TARGET_MB = 32  # issue 14: `nxs node run` loads what `python -m nxs_mesh.worker` loads
TRAFFIC_TARGET = 1024  # bytes/s, the seed's budget for an idle node
EMBEDDED, EMBEDDED_TARGET_MB = 50, 0.3
# Run by path: the process then imports only the library (not this bench package, which loads nats-py
# with aiohttp for its raw clients), as an application embedding nodes would.
_SCALE_WORKER = str(Path(__file__).with_name("scale_worker.py"))


async def wait_heartbeat(session: BenchSession, instance_id: str, worker: Worker, timeout: float = 30.0) -> None:
    """Wait for the node's first heartbeat (it is up, connected and announced)."""
    raw = await session.raw()  # the bench's own nats-py client: a baseline tool may touch nats-py
    sub = await raw.subscribe(subjects.heartbeat(instance_id), max_msgs=1)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await sub.next_msg(timeout=0.5)
                return
            except TimeoutError:
                if not worker.running:
                    raise RuntimeError(f"worker {instance_id} exited:\n{worker.log_tail()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no heartbeat from {instance_id} within {timeout}s:\n{worker.log_tail()}") from None
    finally:
        await sub.unsubscribe()


async def bench_footprint(session: BenchSession) -> list[Row]:
    rss_target, net_target = f"<= {RSS_TARGET_MB} MB", f"< {TRAFFIC_TARGET} B/s"
    if not await asyncio.to_thread(worker_available):
        return [skipped("idle worker RSS", "MB", NOT_AVAILABLE, rss_target),
                skipped("idle node traffic", "B/s", NOT_AVAILABLE, net_target)]
    if not session.monitor_url:
        return [skipped("idle node traffic", "B/s", "no server monitor URL", net_target)]
    instance_id = session.unique("idle")
    worker = Worker(session.url, instance_id).start()
    try:
        await wait_heartbeat(session, instance_id, worker)
        await asyncio.sleep(session.options.settle)  # sleep-ok: let start-up traffic (stream ensure) pass
        before = await node_connections(session.monitor_url, instance_id)
        t0 = time.monotonic()
        await asyncio.sleep(session.options.idle_window)  # sleep-ok: the measurement window itself
        after = await node_connections(session.monitor_url, instance_id)
        window = time.monotonic() - t0
        assert worker.pid is not None
        rss = rss_bytes(worker.pid) / (1024 * 1024)
    finally:
        await asyncio.to_thread(worker.cleanup)
    if not after:
        return [Row("idle worker RSS", "MB", rss, target=rss_target, met=rss <= RSS_TARGET_MB),
                skipped("idle node traffic", "B/s", f"no connection named nxs:{instance_id}", net_target)]
    start = {c["cid"]: c for c in before}
    in_b = sum(c["in_bytes"] - start.get(c["cid"], {}).get("in_bytes", 0) for c in after)
    out_b = sum(c["out_bytes"] - start.get(c["cid"], {}).get("out_bytes", 0) for c in after)
    per_s = (in_b + out_b) / window
    return [
        Row("idle worker RSS", "MB", rss, target=rss_target, met=rss <= RSS_TARGET_MB),
        await _embedded_row(session),
        Row("idle node traffic", "B/s", per_s, target=net_target, met=per_s < TRAFFIC_TARGET,
            note=f"sent {in_b / window:.0f} B/s, received {out_b / window:.0f} B/s over {window:.0f} s, "
                 f"{len(after)} connection(s)"),
    ]


async def _embedded_rss(session: BenchSession, count: int) -> float:
    """RSS (MB) of one process running ``count`` embedded nodes, idle after start-up."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, _SCALE_WORKER, "--url", session.url, "--prefix", session.unique(f"emb{count}"),
        "--count", str(count), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60 + count)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"embedded nodes' process exited ({proc.returncode}) before ready")
        await asyncio.sleep(session.options.settle * 2)  # sleep-ok: let start-up traffic and allocations pass
        return rss_bytes(proc.pid) / (1024 * 1024)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 60)


async def _embedded_row(session: BenchSession) -> Row:
    one = await _embedded_rss(session, 1)
    many = await _embedded_rss(session, 1 + EMBEDDED)
    per_node = (many - one) / EMBEDDED
    return Row("embedded extra Node", "MB", per_node, target=f"<= {EMBEDDED_TARGET_MB} MB",
               met=per_node <= EMBEDDED_TARGET_MB,
               note=f"{per_node * 1024:.0f} KB per node; one process: {one:.1f} MB with 1 node, "
                    f"{many:.1f} MB with {1 + EMBEDDED}")
