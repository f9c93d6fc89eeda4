"""Tables in one house style: ids whole, narrow terminals shed the least important columns, pipes get
plain text.

Rich fits a table to the terminal by shrinking the columns that may wrap and then, as a last resort,
every column evenly, which cuts ids (``demo-node-0…``) and squeezes short columns to nothing. Here:

- a column that does not wrap is never narrower than its longest cell (Rich's ``min_width``): ids,
  times, states, numbers;
- a wrapping column (``wrap=True``) folds its text onto more lines: reasons, subjects, addresses;
- an optional column (``drop=N``) is left out when the table cannot fit otherwise, lowest N first
  (Rich's own measurement of the table decides);
- piped (the console is not a terminal) there is no box drawing, so the lines are plain text.

    table = fitted([Col("id"), Col("reason", wrap=True), Col("preview", drop=1)], rows)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box as boxes
from rich.console import Console, JustifyMethod, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .common import console

__all__ = ["Col", "fitted", "human_bytes"]

# When judging whether a table fits, a wrapping column counts as this narrow at least: narrower, its
# text (an address, a subject) would be more folds than text, and a less important column gives way.
_FOLD_MIN = 20
_UNBOUNDED = 100_000


@dataclass(frozen=True)
class Col:
    header: str
    justify: JustifyMethod = "left"
    wrap: bool = False  # may fold onto more lines; otherwise shown whole
    drop: int = 0  # 0: always shown; else left out when too narrow (1 first, then 2, ...)


def fitted(
    columns: Sequence[Col], rows: Iterable[Sequence[RenderableType]], *, out: Console | None = None,
    **options: Any,
) -> Table:
    """A Table of ``rows`` (str cells are plain text, never markup) that fits ``out`` (the stdout console)."""
    target = out if out is not None else console
    cells = [[Text(c) if isinstance(c, str) else c for c in row] for row in rows]
    shown = list(range(len(columns)))
    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: columns[i].drop)
    if not target.is_terminal:
        options = {**options, "box": None, "pad_edge": False}
    while droppable:
        probe = _table(columns, cells, shown, target, options, fold=_FOLD_MIN)
        # Measured with room to spare: Measurement.get caps what it reports at the width it is given.
        if Measurement.get(target, target.options.update_width(_UNBOUNDED), probe).minimum <= target.width:
            break
        shown.remove(droppable.pop(0))
    return _table(columns, cells, shown, target, options, fold=None)


def _table(
    columns: Sequence[Col], cells: list[list[RenderableType]], shown: list[int], out: Console,
    options: dict[str, Any], *, fold: int | None,
) -> Table:
    table = Table(**{"box": boxes.HEAVY_HEAD, **options})
    for i in shown:
        col = columns[i]
        longest = max([len(col.header)] + [_width(out, row[i]) for row in cells])
        if not col.wrap:
            table.add_column(col.header, justify=col.justify, no_wrap=True, min_width=longest)
        elif fold is not None:  # the probe: as narrow as this column may usefully get
            table.add_column(col.header, width=min(longest, fold))
        else:
            table.add_column(col.header, justify=col.justify, overflow="fold")
    for row in cells:
        table.add_row(*(row[i] for i in shown))
    return table


def _width(out: Console, cell: RenderableType) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return Measurement.get(out, out.options, cell).maximum


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``: sizes as people read them (bytes shown whole)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
