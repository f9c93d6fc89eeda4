"""``nxs bench --profile publish|consume``: where the mesh's CPU goes per message, for cutting it.

The mesh side of the scenario runs once plain (its CPU microseconds per message, no profiler in the
way) and once under cProfile; the report is the top functions by own time, with the profiled
per-call cost in microseconds per message of the scenario.

    text = await profile_mesh("consume", BenchOptions(messages=20_000))
"""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Awaitable, Callable
from typing import Final

from nxs_cli.bench.session import BenchOptions, BenchSession
from nxs_cli.bench.stats import Sample, Stopwatch
from nxs_cli.bench.throughput import content_of, mesh_consume_sample

from nxs_mesh.wire.envelope import new_envelope
from nxs_mesh.wire.errors import ConfigError

__all__ = ["PROFILED", "profile_mesh"]

PROFILED: Final = ("publish", "consume")
TOP: Final = 30


async def _publish(session: BenchSession, n: int) -> Sample:
    mesh = await session.mesh()
    content, to = content_of(session.options.size), session.unique("prof-p")
    with Stopwatch(session.profiler) as sw:
        await mesh.publish_many(new_envelope("CHAT", content, source=mesh.source, to=to) for _ in range(n))
    return sw.sample(n)


async def _consume(session: BenchSession, n: int) -> Sample:
    mesh, nc = await session.mesh(), await session.raw()
    return await mesh_consume_sample(session, mesh, nc, n, "prof-c", batch=session.options.batch,
                                     timeout=max(30.0, n / 500))


_RUNS: Final[dict[str, Callable[[BenchSession, int], Awaitable[Sample]]]] = {"publish": _publish, "consume": _consume}


async def profile_mesh(what: str, options: BenchOptions) -> str:
    """The profile of the mesh side of ``what`` (publish: ``publish_many``, envelopes built as they go;
    consume: ``Mesh.consume`` of preloaded chats, empty handler) as text."""
    if what not in _RUNS:
        raise ConfigError("profile", f"unknown {what!r}; profiled: {', '.join(PROFILED)}")
    run, n = _RUNS[what], options.messages
    async with BenchSession(options) as session:
        plain = await run(session, n)
        await session.close_clients()
        profiler = session.profiler = cProfile.Profile()
        profiled = await run(session, n)
    out = io.StringIO()
    out.write(f"{what}: {n} messages of {options.size} B; without the profiler {plain.rate:,.0f} msg/s, "
              f"{plain.cpu_us:.1f} us CPU per message (profiled: {profiled.cpu_us:.1f})\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(TOP)
    return out.getvalue()
