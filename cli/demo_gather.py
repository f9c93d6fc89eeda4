"""The scatter/gather part of `nxs demo`: a gather over the running demo nodes, then one whose deadline
ends a subtask that would run far too long (cancelled on its worker, its caller told once).

``demo_gather(url, work, say)`` needs running demo workers with the ``sleep`` capability on ``url``; the
demo (``cli/node_demo.py``) calls it with its own ``say``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["demo_gather"]


async def demo_gather(url: str, work: Path, say: Callable[[str], None]) -> None:
    """Raises ``MeshError`` (the demo reports it) when no demo node can take the work."""
    from nxs_mesh import Mesh, MeshConfig
    from nxs_mesh.client.gather import capable_nodes

    cfg = MeshConfig(servers=(url,), instance_id="demo-gather", agent_id="operator", data_dir=str(work / "gather"))
    async with Mesh(cfg) as mesh:
        live = await capable_nodes(mesh, "sleep")
        say(f"[bold]gather.[/] {len(live)} live node(s) can sleep: {', '.join(n.node for n in live)} "
            "(from their statuses and heartbeats)")
        t0 = time.monotonic()
        got = await mesh.gather("sleep", [0.3] * 9, deadline=30)
        per: dict[str, int] = {}
        for sub in got:
            per[sub.node or "-"] = per.get(sub.node or "-", 0) + 1
        spread = ", ".join(f"{node} {n}" for node, n in sorted(per.items()))
        say(f"[bold]gather.[/] 9 subtasks of 0.3 s: {got.completed} completed in {time.monotonic() - t0:.2f}s, "
            f"in input order ({spread})")
        got = await mesh.gather("sleep", [0.2, 0.2, 60], deadline=3)
        ends = ", ".join(f"#{s.index} {s.state}" for s in got)
        say(f"[bold]gather.[/] with a 3 s deadline and one 60 s subtask: {ends}; the long one's handler was "
            "cancelled on its worker, and each caller heard once")
