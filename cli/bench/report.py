"""What a benchmark produces: one ``Row`` per figure, mesh side by side with raw nats-py.

Plain data only (no Rich): the CLI renders it as a table or as JSON.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Row", "machine_info"]


@dataclass(frozen=True)
class Row:
    """One figure. ``ratio`` is always mesh / raw; ``higher_is_better`` says how to read it."""

    scenario: str
    metric: str
    mesh: float | None
    raw: float | None = None
    higher_is_better: bool = True
    #: The target as text ("≥ 0.9x raw", "< 40 MB"), and whether this run met it (None: no target).
    target: str = ""
    met: bool | None = None
    note: str = ""
    skipped: bool = False

    @property
    def ratio(self) -> float | None:
        if self.mesh is None or not self.raw:
            return None
        return self.mesh / self.raw

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        return out


def ratio_target(row: Row, limit: float) -> Row:
    """Return ``row`` with its target set: ratio at least ``limit`` (higher is better) or at most it."""
    r = row.ratio
    if row.higher_is_better:
        text, met = f">= {limit:g}x", None if r is None else r >= limit
    else:
        text, met = f"<= {limit:g}x", None if r is None else r <= limit
    return _with(row, target=text, met=met)


def _with(row: Row, **changes: Any) -> Row:
    data = {k: v for k, v in asdict(row).items()}
    data.update(changes)
    return Row(**data)


def skipped(scenario: str, metric: str, reason: str, target: str = "") -> Row:
    return Row(scenario, metric, None, target=target, note=reason, skipped=True)


@dataclass(frozen=True)
class MachineInfo:
    cores: int
    memory_gib: float
    python: str
    platform: str
    versions: dict[str, str] = field(default_factory=dict)


def machine_info(versions: dict[str, str] | None = None) -> dict[str, Any]:
    """Cores, memory and versions, so a published table says what it was measured on."""
    mem = 0.0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) / (1024 * 1024)
                    break
    except OSError:
        pass
    return asdict(MachineInfo(os.cpu_count() or 0, round(mem, 1), platform.python_version(),
                              platform.platform(terse=True), dict(versions or {})))
