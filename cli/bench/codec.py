"""Envelope encode+decode per second (mesh: validated msgspec structs; raw: stdlib json of a dict).

The note adds msgspec's own encoder and decoder on the same struct with none of the mesh's checks
(id characters, reply fields, typed content, size, error naming): the ceiling this design can reach,
so the row shows how much of the cost is msgspec and how much is the mesh's Python around it.
"""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
from nxs_cli.bench.report import Row
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import median, rate
from nxs_cli.bench.throughput import content_of

from nxs_mesh.wire.envelope import Envelope, Source, decode, encode, new_envelope

__all__ = ["bench_codec", "codec_rate"]

TARGET = 500_000


def codec_rate(n: int, size: int, rounds: int = 3) -> tuple[float, float, float]:
    """(mesh, raw, msgspec alone) encode+decode round trips per second, median of ``rounds``."""
    env = new_envelope("CHAT", content_of(size), source=Source("bench-node", "bench"), to="other-node")
    as_dict = msgspec.to_builtins(env)
    bare_encode, bare_decode = msgspec.json.Encoder().encode, msgspec.json.Decoder(Envelope).decode
    mesh_rates, raw_rates, bare_rates = [], [], []
    for _ in range(rounds):  # inline loops: no call in the way of what is measured
        t0 = time.perf_counter()
        for _ in range(n):
            decode(encode(env))
        mesh_rates.append(rate(n, time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(n):
            json.loads(json.dumps(as_dict))
        raw_rates.append(rate(n, time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(n):
            bare_decode(bare_encode(env))
        bare_rates.append(rate(n, time.perf_counter() - t0))
    return median(mesh_rates), median(raw_rates), median(bare_rates)


async def bench_codec(session: BenchSession) -> list[Row]:
    n = max(1_000, session.options.messages * 5)
    m, r, bare = await asyncio.to_thread(codec_rate, n, session.options.size, session.options.rounds)
    return [Row("envelope encode+decode", "per s", m, r, target=f">= {TARGET // 1000}k/s", met=m >= TARGET,
                note=f"raw: stdlib json of the same dict, unvalidated; msgspec's encoder+decoder alone on the "
                     f"same struct, no mesh checks: {bare:,.0f}/s")]
