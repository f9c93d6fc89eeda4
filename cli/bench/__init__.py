"""``nxs bench``: the mesh measured side by side with raw nats-py on the same server, in the same run.

    report = await run_bench(["publish", "latency"], BenchOptions(messages=5000))
    for row in report.rows:
        print(row.scenario, row.mesh, row.raw, row.ratio)

Modules: ``session`` (server and clients), ``throughput``, ``latency``, ``codec``, ``footprint``,
``failure`` (the scenarios), ``stats`` and ``report`` (figures as plain data), ``runner``.
Benchmarks report figures; they assert nothing.
"""

from __future__ import annotations

from nxs_cli.bench.report import Row
from nxs_cli.bench.runner import DEFAULT_SCENARIOS, SCENARIOS, BenchReport, run_bench
from nxs_cli.bench.session import BenchOptions, BenchSession

__all__ = ["DEFAULT_SCENARIOS", "SCENARIOS", "BenchOptions", "BenchReport", "BenchSession", "Row", "run_bench"]
