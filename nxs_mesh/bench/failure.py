"""Failure detection: ``kill -9`` of a worker -> the Doctor's ALERT about it (median of several trials).

Two workers run (every worker runs a Doctor); the victim is killed once both heartbeat, and the clock
runs from the kill to the first ALERT envelope on ``nxs.alert.<victim>``. Target: the heartbeat
timeout plus one interval (DESIGN.md section 6: 5 s + 1 s).
"""

from __future__ import annotations

import asyncio
import time

from .. import subjects
from .footprint import wait_heartbeat
from .report import Row, skipped
from .session import BenchSession
from .stats import median
from .worker import NOT_AVAILABLE, Worker, worker_available

__all__ = ["bench_failure"]

HEARTBEAT_TIMEOUT = 5.0
HEARTBEAT_INTERVAL = 1.0
TARGET = HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL


async def _trial(session: BenchSession) -> float:
    victim_id, watcher_id = session.unique("victim"), session.unique("doctor")
    victim = Worker(session.url, victim_id).start()
    watcher = Worker(session.url, watcher_id).start()
    mesh = await session.mesh()
    alerts = await mesh.nc.subscribe(subjects.alert(victim_id))
    try:
        await wait_heartbeat(session, watcher_id, watcher)
        # Two more beats from the victim once the watcher is up: its Doctor has seen the victim alive.
        for _ in range(2):
            await wait_heartbeat(session, victim_id, victim)
        t0 = time.monotonic()
        await asyncio.to_thread(victim.kill)
        try:
            await alerts.next_msg(timeout=TARGET * 4)
        except TimeoutError:
            raise RuntimeError(f"no alert about {victim_id} within {TARGET * 4:g}s; doctor log:\n"
                               f"{watcher.log_tail()}") from None
        return time.monotonic() - t0
    finally:
        await alerts.unsubscribe()
        await asyncio.gather(asyncio.to_thread(victim.cleanup), asyncio.to_thread(watcher.cleanup))


async def bench_failure(session: BenchSession) -> list[Row]:
    target = f"<= {TARGET:g} s"
    if not await asyncio.to_thread(worker_available):
        return [skipped("kill -9 -> alert", "s", NOT_AVAILABLE, target)]
    times = [await _trial(session) for _ in range(max(1, session.options.failure_trials))]
    m = median(times)
    return [Row("kill -9 -> alert", "s", m, target=target, met=m <= TARGET,
                note=f"median of {len(times)}: " + ", ".join(f"{t:.2f}" for t in times))]
