"""What a benchmark produces: one ``Row`` per figure, mesh side by side with its anchors.

Anchors, all measured in the same run on the same server:

- ``raw``: nats-py's convenience API (``js.publish``, ``publish_async``, ``fetch``, ``js.subscribe``);
- ``lean``: the best loop written directly on nats-py core inside the bench (``bench.lean``): a
  publisher with its own reply inbox and a bounded ack window, a pull loop with its own inbox,
  ``MSG.NEXT`` requests and ``+ACK`` publishes; for request/reply, core NATS request/reply;
- ``push``: a plain durable push consumer on nats-py (callback, explicit ack);
- ``sdk``: Synadia's agent SDK (``synadia-ai-agents``), its prompt round trip.

Plain data only (no Rich): the CLI renders it as a table or as JSON.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ANCHORS", "Row", "anchor_target", "machine_info"]

#: The anchor columns, in table order (see the module docstring).
ANCHORS = ("raw", "lean", "push", "sdk")


@dataclass(frozen=True)
class Row:
    """One figure. ``ratio`` is always mesh / raw (``ratio_to`` for the other anchors);
    ``higher_is_better`` says how to read it."""

    scenario: str
    metric: str
    mesh: float | None
    raw: float | None = None
    higher_is_better: bool = True
    lean: float | None = None
    push: float | None = None
    sdk: float | None = None
    #: The anchors the target is a ratio to (empty: raw).
    versus: tuple[str, ...] = ()
    #: The target as text ("≥ 0.9x raw", "< 40 MB"), and whether this run met it (None: no target).
    target: str = ""
    met: bool | None = None
    note: str = ""
    skipped: bool = False

    @property
    def ratio(self) -> float | None:
        return self.ratio_to("raw")

    def ratio_to(self, anchor: str) -> float | None:
        """mesh / the named anchor (None when either is missing)."""
        base = getattr(self, anchor)
        if self.mesh is None or not base:
            return None
        return float(self.mesh / base)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["versus"] = list(self.versus)
        out["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        out["ratios"] = {a: round(r, 3) for a in ANCHORS if (r := self.ratio_to(a)) is not None}
        return out


def ratio_target(row: Row, limit: float) -> Row:
    """Return ``row`` with its target set: ratio at least ``limit`` (higher is better) or at most it."""
    r = row.ratio
    if row.higher_is_better:
        text, met = f">= {limit:g}x", None if r is None else r >= limit
    else:
        text, met = f"<= {limit:g}x", None if r is None else r <= limit
    return _with(row, target=text, met=met)


def anchor_target(row: Row, **limits: float) -> Row:
    """Return ``row`` with a target against named anchors (``lean=0.9, push=1.0``): met when every
    ratio holds (at least the limit when higher is better, at most it otherwise); unknown while an
    anchor is missing."""
    sign = ">=" if row.higher_is_better else "<="
    text = ", ".join(f"{sign} {limit:g}x {anchor}" for anchor, limit in limits.items())
    ratios = [(row.ratio_to(anchor), limit) for anchor, limit in limits.items()]
    met: bool | None = None
    if all(r is not None for r, _ in ratios):
        met = all((r >= lim) if row.higher_is_better else (r <= lim) for r, lim in ratios if r is not None)
    return _with(row, target=text, met=met, versus=tuple(limits))


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
