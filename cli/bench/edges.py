"""Edges: a Mesh over nats-server's WebSocket listener against the same Mesh over TCP, in one run.

Both clients publish -> consume (durable pull consumer handler) one message at a time against one
server of their own that has a WebSocket listener (``ws://`` on loopback), so the only difference is
the transport: the row's ``mesh`` column is the WebSocket client, its ``raw`` column the TCP client (the
anchor), and the ratio is ws / tcp. A few seconds at the default sizes: it is a default scenario.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from nxs_cli.bench.report import Row
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import percentile
from nxs_cli.bench.throughput import content_of

from nxs_mesh import Mesh
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope

__all__ = ["bench_edges"]

WARMUP = 20


async def bench_edges(session: BenchSession) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="nxs-bench-edges-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats", name=f"nxs-bench-ws-{session.run_id}", websocket_port=-1)
        await asyncio.to_thread(server.start)
        try:
            ws = await _latency(session, server.ws_url, Path(tmp))
            tcp = await _latency(session, server.url, Path(tmp))
        finally:
            await asyncio.to_thread(server.stop)
    rows = [Row("ws publish -> handler", f"p{q} us", percentile(ws, q) * 1e6, percentile(tcp, q) * 1e6,
                higher_is_better=False) for q in (50, 99)]
    rows[0] = replace(rows[0], note="mesh column: Mesh over ws:// (WebSocket listener); raw: the same Mesh over TCP")
    return rows


async def _latency(session: BenchSession, url: str, tmp: Path, *, ensure: bool = True) -> list[float]:
    """publish -> handler, one at a time, through one Mesh on ``url`` (publisher and consumer, as an agent).
    ``ensure=False``: the streams exist already (a client on the relay hub sees a cluster of one)."""
    opts = session.options
    content = content_of(opts.size)
    to = session.unique("edge")
    cfg = MeshConfig(servers=(url,), instance_id=to, data_dir=str(tmp / to))
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def handler(env: Envelope) -> None:
        arrived.put_nowait(time.perf_counter())

    async with Mesh(cfg, ensure=ensure) as mesh:
        await mesh.consume("chat", handler, durable=to, filters=[subjects.chat(to)], batch=opts.batch)
        samples = []
        for _ in range(min(WARMUP, opts.latency_samples) + opts.latency_samples):
            sent = time.perf_counter()
            await mesh.publish("CHAT", content, to=to)
            samples.append(await asyncio.wait_for(arrived.get(), 10) - sent)
        return samples[-opts.latency_samples:]  # without the warm-up
