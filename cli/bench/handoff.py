"""Handoff: an agent with a 10 MB context moved between two embedded nodes, offer to "ready" on the
target (offer, bundle upload, prepare, commit = B downloaded, checked, loaded, committed, drained and
announced ready), p50 and p99 over the rounds; the anchor, in the same run, is a plain ``mesh.files``
put + get of the same 10 MB (the bytes a handoff must move at least once each way).

The agent goes back and forth (A -> B, B -> A, ...), so each round starts from a settled owner.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from nxs_cli.bench.report import Row
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import percentile

from nxs_mesh.node.agent_context import HandoffContext
from nxs_mesh.node.handoff import HandoffService
from nxs_mesh.node.node import Node, NodeOptions

__all__ = ["bench_handoff"]

MB = 1024 * 1024
SIZE = 10 * MB


def rounds_of(rounds: int) -> int:
    """10-20 handoffs: the default 3 rounds give 15 (about 5-15 s on a laptop)."""
    return max(10, min(20, 5 * rounds))


async def _loaded(ctx: HandoffContext) -> str:
    return f"Continuing with {ctx.size} bytes of context."


async def bench_handoff(session: BenchSession) -> list[Row]:
    n = rounds_of(session.options.rounds)
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="nxs-bench-handoff-"))
    agent = f"agent:{session.unique('moving')}"
    opts = NodeOptions(doctor=False, outbox=False, heartbeat_interval=1.0)
    nodes = [Node(session.mesh_config(session.unique(name), data_dir=str(tmp / name)),
                  opts if name == "b" else NodeOptions(doctor=False, outbox=False, agents=(agent,)))
             for name in ("a", "b")]
    for node in nodes:
        node.parts.append(HandoffService(loader=_loaded))
    context = os.urandom(SIZE)
    try:
        for node in nodes:
            await node.start()
        mesh = await session.mesh()
        handoffs, anchors = [], []
        for i in range(n):
            to = nodes[(i + 1) % 2].node_id
            outcome = await mesh.handoff(agent, to=to, context=context, timeout=60)
            handoffs.append(sum(v for k, v in outcome.steps.items() if k != "release"))
            name = session.unique("anchor")
            t0 = time.perf_counter()
            await mesh.files.put(context, name=name)
            await mesh.files.get(name, tmp / "anchor.out")
            anchors.append(time.perf_counter() - t0)
            await mesh.files.delete(name)
    finally:
        for node in nodes:
            await node.stop()
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    note = f"{n} handoffs of a {SIZE // MB} MB context; raw = mesh.files put+get of the same bytes"
    return [
        Row("handoff p50", "ms", percentile(handoffs, 50) * 1e3, percentile(anchors, 50) * 1e3,
            higher_is_better=False, note=note),
        Row("handoff p99", "ms", percentile(handoffs, 99) * 1e3, percentile(anchors, 99) * 1e3,
            higher_is_better=False, note="offer -> ready on the target"),
    ]
