"""Small statistics for benchmark figures: rates, percentiles, medians (no numpy needed)."""

from __future__ import annotations

import cProfile
import math
import statistics
import time
from collections.abc import Sequence
from types import TracebackType
from typing import NamedTuple

__all__ = ["Sample", "Stopwatch", "median", "percentile", "rate"]


class Sample(NamedTuple):
    """One timed run: events per second, and this process's CPU microseconds per event."""

    rate: float
    cpu_us: float


class Stopwatch:
    """Wall and CPU time (this process: the client side; the server is another process) of a block.

        with Stopwatch() as sw:
            ...
        sw.sample(n)  # Sample(rate, cpu_us)
    """

    def __init__(self, profiler: cProfile.Profile | None = None) -> None:
        self.wall = self.cpu = 0.0
        self._profiler = profiler  # ``nxs bench --profile``: profile exactly the timed block

    def __enter__(self) -> Stopwatch:
        if self._profiler is not None:
            self._profiler.enable()
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.wall, self.cpu = time.perf_counter() - self._t0, time.process_time() - self._c0
        if self._profiler is not None:
            self._profiler.disable()

    def sample(self, count: int) -> Sample:
        return Sample(rate(count, self.wall), self.cpu / count * 1e6 if count else 0.0)


def rate(count: int, seconds: float) -> float:
    """Events per second; 0 when nothing was timed."""
    return count / seconds if seconds > 0 else 0.0


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by nearest rank on the sorted samples."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
