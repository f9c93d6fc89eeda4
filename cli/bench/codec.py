"""Envelope encode+decode per second (mesh: validated msgspec structs; raw: stdlib json of a dict)."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
from nxs_cli.bench.report import Row
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import median, rate
from nxs_cli.bench.throughput import content_of

from nxs_mesh.wire.envelope import Source, decode, encode, new_envelope

__all__ = ["bench_codec", "codec_rate"]

TARGET = 500_000


def codec_rate(n: int, size: int, rounds: int = 3) -> tuple[float, float]:
    """(mesh, raw) encode+decode round trips per second, median of ``rounds``."""
    env = new_envelope("CHAT", content_of(size), source=Source("bench-node", "bench"), to="other-node")
    as_dict = msgspec.to_builtins(env)
    mesh_rates, raw_rates = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            decode(encode(env))
        mesh_rates.append(rate(n, time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(n):
            json.loads(json.dumps(as_dict))
        raw_rates.append(rate(n, time.perf_counter() - t0))
    return median(mesh_rates), median(raw_rates)


async def bench_codec(session: BenchSession) -> list[Row]:
    n = max(1_000, session.options.messages * 5)
    m, r = await asyncio.to_thread(codec_rate, n, session.options.size, session.options.rounds)
    return [Row("envelope encode+decode", "per s", m, r, target=f">= {TARGET // 1000}k/s", met=m >= TARGET,
                note="raw: stdlib json of the same dict, unvalidated")]
