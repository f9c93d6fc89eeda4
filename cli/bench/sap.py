"""The Synadia front door's prompt round trip, against ``Mesh.request`` and a plain SDK agent, in one run.

Three ways to ask the same echo handler, one at a time, timed from the call to the last frame:

- **front door**: the unmodified ``synadia-ai-agents`` client prompts a mesh agent behind
  ``SapFrontDoor`` (the prompt becomes a stored COMMAND, the node's consumer runs it, the chunks
  and the terminator come back on core NATS, a RESULT is stored);
- **Mesh.request**: the same node's same handler, called as a COMMAND and answered with a RESULT;
- **plain SDK agent**: an ``AgentService`` with the same echo, on core NATS only (no durability).

Two rows: front door vs Mesh.request (what the protocol costs on top of the mesh's own request),
and front door vs the plain SDK agent (what durability, dedup and priority cost a protocol caller).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from nxs_cli.bench.report import Row, skipped
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import percentile

from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.sap import SapFrontDoor

__all__ = ["bench_sap"]

_WARMUP = 5


async def _timed(n: int, once: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(min(_WARMUP, n)):
        await once()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await once()
        out.append(time.perf_counter() - t0)
    return out


async def _drain(agent: Any, text: str) -> None:
    async for _ in agent.prompt(text):
        pass


async def _plain_sdk(session: BenchSession, n: int, text: str) -> list[float]:
    from synadia_ai.agent_service import AgentService
    from synadia_ai.agents import Agents

    host_nc, caller_nc = await session.raw(), await session.raw()
    service = AgentService(agent="bench-plain", owner="nxs", session_name=session.unique("s"), nc=host_nc)

    async def echo(envelope: Any, stream: Any) -> None:
        await stream.send(envelope.prompt)

    service.on_prompt(echo)
    await service.start()
    agents = Agents(nc=caller_nc)
    try:
        [agent] = [a for a in await agents.discover() if a.session_name == service.subject.session_name]
        return await _timed(n, lambda: _drain(agent, text))
    finally:
        await agents.close()
        await service.stop()


def prompt_load(session: BenchSession) -> tuple[int, str]:
    """How many prompts one at a time, and the prompt (the session's size, at most 1 KiB)."""
    return max(10, session.options.latency_samples // 4), "x" * min(session.options.size, 1024)


def echo_prompt_node(session: BenchSession, node_id: str, agent: str) -> Node:
    """An in-process node running ``agent`` whose ``prompt`` command echoes the prompt (also `nxs bench a2a`'s)."""
    node = Node(session.mesh_config(node_id), NodeOptions(agents=(agent,), doctor=False, fetch_timeout=1.0))

    @node.command("prompt")
    async def prompt(args: Any) -> Any:
        return args["prompt"] if isinstance(args, dict) else args

    return node


async def bench_sap(session: BenchSession) -> list[Row]:
    try:
        from synadia_ai.agents import Agents
    except ImportError:
        return [skipped("sap prompt", "-", "the Synadia SDKs are not installed: pip install 'nxs-mesh[sap]'")]
    n, text = prompt_load(session)
    node_id = session.unique("sap")
    node = echo_prompt_node(session, node_id, "bench-agent")
    SapFrontDoor.attach(node)
    async with node:
        client = await session.mesh()
        agents = Agents(nc=await session.raw())
        try:
            [agent] = [a for a in await agents.discover() if a.metadata.get("nxs_node") == node_id]
            door = await _timed(n, lambda: _drain(agent, text))
            request = await _timed(n, lambda: client.request(node_id, "prompt", {"prompt": text}, timeout=10))
        finally:
            await agents.close()
    plain = await _plain_sdk(session, n, text)
    note = f"{n} prompts one at a time, {len(text)} B, echo handler"
    rows = []
    for q in (50, 99):
        rows.append(Row("sap front door vs Mesh.request", f"p{q} us", percentile(door, q) * 1e6,
                        percentile(request, q) * 1e6, higher_is_better=False, note=note if q == 50 else ""))
    for q in (50, 99):
        rows.append(Row("sap front door vs plain SDK agent", f"p{q} us", percentile(door, q) * 1e6,
                        percentile(plain, q) * 1e6, higher_is_better=False,
                        note="baseline: AgentService on core NATS, nothing stored" if q == 50 else ""))
    return rows
