"""Failure detection: ``kill -9`` of a worker -> the Doctor's ALERT about it, and -> the task it had
claimed finished by the other worker (median of several trials).

Two workers run (every worker runs a Doctor), both able to take ``sleep`` tasks. A task is submitted;
the worker that claims it is killed mid-task, and the clocks run from the kill to the first ALERT
envelope on ``nxs.alert.<victim>`` and to the task's claim record saying ``done`` (finished by the
survivor). Target for the alert: the heartbeat timeout plus one interval (DESIGN.md section 6: 5 s + 1 s).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nxs_cli.bench.footprint import wait_heartbeat
from nxs_cli.bench.report import Row, skipped
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import median
from nxs_cli.bench.worker import NOT_AVAILABLE, Worker, worker_available

from nxs_mesh.aio.waiting import wait_until
from nxs_mesh.node.tasks import TaskStore, submit_task
from nxs_mesh.wire import subjects

__all__ = ["bench_failure"]

HEARTBEAT_TIMEOUT = 5.0
HEARTBEAT_INTERVAL = 1.0
TARGET = HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL
TASK_SECONDS = 2.0  # long enough to be killed mid-task, short enough to finish soon after on the survivor


async def _trial(session: BenchSession) -> tuple[float, float]:
    ids = [session.unique("fail-a"), session.unique("fail-b")]
    workers = {i: Worker(session.url, i, extra_args=("-C", "sleep")).start() for i in ids}
    mesh = await session.mesh()
    alerts: dict[str, float] = {}

    async def on_alert(subject: str, data: bytes, headers: Any) -> None:
        alerts.setdefault(subjects.parse(subject).instance or "", time.monotonic())

    sub = await mesh.subscribe("nxs.alert.>", on_alert)
    try:
        # Two beats from each once both are up: each one's Doctor has seen the other alive.
        for _ in range(2):
            for i in ids:
                await wait_heartbeat(session, i, workers[i])
        store = await TaskStore.open(mesh)
        ack, _ = await submit_task(mesh, "sleep", TASK_SECONDS, ttl=300)

        async def claimed() -> dict[str, Any] | None:
            return (await store.get(ack.message_id))[0]

        victim = (await wait_until(claimed, 30, "the task to be claimed"))["node"]
        t0 = time.monotonic()
        await asyncio.to_thread(workers[victim].kill)
        try:
            await wait_until(lambda: victim in alerts, TARGET * 4, f"an alert about {victim}")
        except Exception:
            survivor = next(i for i in ids if i != victim)
            raise RuntimeError(f"no alert about {victim}; doctor log:\n{workers[survivor].log_tail()}") from None
        alerted = alerts[victim] - t0

        async def done() -> bool:
            record = await claimed()
            return bool(record and record.get("state") == "done")

        await wait_until(done, 60, "the task to finish on the survivor", interval=0.02)
        return alerted, time.monotonic() - t0
    finally:
        await sub.unsubscribe()
        await asyncio.gather(*(asyncio.to_thread(w.cleanup) for w in workers.values()))


async def bench_failure(session: BenchSession) -> list[Row]:
    target = f"<= {TARGET:g} s"
    if not await asyncio.to_thread(worker_available):
        return [skipped("kill -9 -> alert", "s", NOT_AVAILABLE, target)]
    trials = [await _trial(session) for _ in range(max(1, session.options.failure_trials))]
    alert_times, done_times = [t[0] for t in trials], [t[1] for t in trials]
    m = median(alert_times)
    return [
        Row("kill -9 -> alert", "s", m, target=target, met=m <= TARGET,
            note=f"median of {len(trials)}: " + ", ".join(f"{t:.2f}" for t in alert_times)),
        Row("kill -9 -> task done elsewhere", "s", median(done_times),
            note=f"median of {len(trials)}: " + ", ".join(f"{t:.2f}" for t in done_times)
            + f" (a {TASK_SECONDS:g} s task, restarted on the survivor)"),
    ]
