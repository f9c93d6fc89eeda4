"""`nxs bench gateway` at tiny size: every figure is there and positive (no timings asserted), and it is
not in the default set (it starts a process and needs the gateway extra)."""

from __future__ import annotations

import math

import pytest
from nxs_cli.bench import DEFAULT_SCENARIOS, BenchOptions, run_bench
from nxs_cli.bench.runner import SCENARIOS


@pytest.mark.timeout(120)
async def test_the_gateway_benchmark_reports_publish_and_tail_against_the_library():
    report = await run_bench(["gateway"], BenchOptions(messages=60, rounds=1))
    rows = [r.as_dict() for r in report.rows]
    assert [(r["scenario"], r["metric"]) for r in rows] == [
        ("gateway publish", "msg/s"), ("gateway publish", "p50 us"), ("gateway publish", "p99 us"),
        ("gateway SSE tail", "msg/s"), ("gateway SSE tail", "p50 us"), ("gateway SSE tail", "p99 us")], rows
    for r in rows:
        assert not r["skipped"] and math.isfinite(r["mesh"]) and r["mesh"] > 0 and r["raw"] > 0, r
    assert "gateway" in SCENARIOS and "gateway" not in DEFAULT_SCENARIOS
