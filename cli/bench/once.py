"""The cost of exactly-once handling: the same durable consume with and without the group's shared
processed-id record (``Mesh.consume(exactly_once=True)``: two KV writes per message).

Both sides are the mesh (the baseline column holds the mesh *without* exactly-once, not raw nats-py),
same server, same preloaded messages, same batch; rounds alternate, the median round is reported.
One row with one handler at a time (each message waits for its two writes) and one with 32 at once
(the writes overlap), which is how a worker with concurrency recovers most of the cost.
"""

from __future__ import annotations

from nxs_cli.bench.report import Row
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import median
from nxs_cli.bench.throughput import mesh_consume_rate

from nxs_mesh.client.mesh import Mesh

__all__ = ["bench_once"]


async def _consume_rate(session: BenchSession, mesh: Mesh, n: int, *, exactly_once: bool, concurrency: int) -> float:
    return await mesh_consume_rate(session, mesh, await session.raw(), n, "once", timeout=max(60.0, n / 200),
                                   batch=session.options.batch, concurrency=concurrency, exactly_once=exactly_once)


async def bench_once(session: BenchSession) -> list[Row]:
    # A quarter of the messages: a guarded message costs two replicated writes, and a stable rate needs fewer.
    n = max(20, session.options.messages // 4)
    mesh = await session.mesh()
    rows = []
    for concurrency in (1, 32):
        with_once, without = [], []
        for i in range(session.options.rounds):
            order = (True, False) if i % 2 == 0 else (False, True)
            for flag in order:
                r = await _consume_rate(session, mesh, n, exactly_once=flag, concurrency=concurrency)
                (with_once if flag else without).append(r)
        rows.append(Row(
            "consume exactly-once", "msg/s", median(with_once), median(without),
            note=f"concurrency {concurrency}, batch {session.options.batch}, {n} messages; the baseline column is "
                 f"the same consume without exactly-once (ratio = its cost)",
        ))
    return rows
