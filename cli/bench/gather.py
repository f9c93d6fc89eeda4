"""Scatter/gather: ``mesh.gather`` of N subtasks (100 at the default size) over three workers, against the
same work on one worker in the same run, and the gather's overhead per subtask.

Each subtask is the built-in ``sleep`` task for ``WORK`` seconds, so the work itself has a known cost.
First one worker runs alone (the anchor: N x WORK of work done one after another, plus the overhead),
then two more join and the same gather runs again. The ratio is the time on three against the time on
one (ideal: 1/3); the overhead per subtask is what one worker spent beyond the work, divided by N:
records, the work queue, claims, RESULTs and the gather's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import time

from nxs_cli.bench.report import Row, skipped
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.worker import NOT_AVAILABLE, Worker, worker_available

from nxs_mesh.aio.waiting import wait_until
from nxs_mesh.client.gather import capable_nodes

__all__ = ["bench_gather"]

WORK = 0.02  # seconds of sleep per subtask


def subtask_count(messages: int) -> int:
    return min(100, max(10, messages // 200))


async def _timed_gather(session: BenchSession, n: int) -> float:
    mesh = await session.mesh()
    t0 = time.perf_counter()
    got = await mesh.gather("sleep", [WORK] * n, deadline=120)
    elapsed = time.perf_counter() - t0
    if got.completed != n:
        raise RuntimeError(f"gather completed {got.completed} of {n}: {got.counts()}")
    return elapsed


async def _workers_up(session: BenchSession, ids: list[str]) -> None:
    mesh = await session.mesh()

    async def all_live() -> bool:
        return {n.node for n in await capable_nodes(mesh, "sleep")} >= set(ids)

    await wait_until(all_live, 60, f"workers {', '.join(ids)} live with capability sleep", interval=0.1)


async def bench_gather(session: BenchSession) -> list[Row]:
    if not await asyncio.to_thread(worker_available):
        return [skipped("gather, 3 workers vs 1", "s", NOT_AVAILABLE)]
    n = subtask_count(session.options.messages)
    ids = [session.unique(f"gather-{i}") for i in range(3)]
    workers = [Worker(session.url, ids[0], extra_args=("-C", "sleep")).start()]
    try:
        await _workers_up(session, ids[:1])
        one = await _timed_gather(session, n)
        workers += [Worker(session.url, i, extra_args=("-C", "sleep")).start() for i in ids[1:]]
        await _workers_up(session, ids)
        three = await _timed_gather(session, n)
    finally:
        await asyncio.gather(*(asyncio.to_thread(w.cleanup) for w in workers))
    overhead_ms = max(0.0, (one - n * WORK) / n * 1000)
    return [
        Row("gather, 3 workers vs 1", "s", three, raw=one, higher_is_better=False, target="ratio ~0.33 (ideal)",
            note=f"{n} subtasks of {WORK * 1000:g} ms sleep; raw = the same gather on one worker"),
        Row("gather overhead per subtask", "ms", overhead_ms or 0.001, higher_is_better=False,
            note=f"one worker: ({one:.2f} s - {n} x {WORK * 1000:g} ms of work) / {n}"),
    ]
