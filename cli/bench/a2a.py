"""A prompt's round trip through the gateway's A2A binding against ``Mesh.request``, in one run.

- **A2A**: the real ``a2a-sdk`` client (JSON-RPC ``SendMessage``, blocking, over its own httpx
  connection) -> `nxs gateway` (its own process) -> the SDK's request handler and task store ->
  a COMMAND ``prompt`` to the agent's node -> its RESULT -> the completed Task.
- **anchor**: ``Mesh.request`` of the same ``prompt`` command to the same node and agent.

Both talk to one in-process node whose ``prompt`` handler echoes. Not in the default set: it needs the
``a2a`` extra and starts a process (`nxs bench a2a`).
"""

from __future__ import annotations

from typing import Any

from nxs_cli.bench.gateway import _gateway_process
from nxs_cli.bench.report import Row, skipped
from nxs_cli.bench.sap import _timed, echo_prompt_node, prompt_load
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import percentile

__all__ = ["bench_a2a"]

AGENT = "bench-a2a"


async def _a2a_prompt(client: Any, text: str) -> None:
    from a2a.helpers import new_text_message
    from a2a.types import Role, SendMessageRequest, TaskState

    request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
    async for event in client.send_message(request):
        if event.HasField("task") and event.task.status.state != TaskState.TASK_STATE_COMPLETED:
            raise RuntimeError(f"the A2A task ended {TaskState.Name(event.task.status.state)}")


async def bench_a2a(session: BenchSession) -> list[Row]:
    try:
        import httpx
        from a2a.client import ClientConfig, create_client
    except ImportError:
        return [skipped("a2a prompt", "-", "the A2A SDK is not installed: pip install 'nxs-mesh[a2a]'")]
    n, text = prompt_load(session)
    node_id = session.unique("a2a")
    node = echo_prompt_node(session, node_id, AGENT)
    async with node, _gateway_process(session.url) as base, httpx.AsyncClient(timeout=30) as http:
        client = await create_client(f"{base}/a2a/{AGENT}", ClientConfig(streaming=False, httpx_client=http))
        mesh = await session.mesh()
        try:
            a2a = await _timed(n, lambda: _a2a_prompt(client, text))
            request = await _timed(n, lambda: mesh.request(node_id, "prompt", {"prompt": text}, agent=AGENT,
                                                           timeout=10))
        finally:
            await client.close()
    note = f"{n} prompts one at a time, {len(text)} B, echo handler; A2A: a2a-sdk client (httpx) -> `nxs gateway`"
    return [Row("a2a SendMessage vs Mesh.request", f"p{q} us", percentile(a2a, q) * 1e6, percentile(request, q) * 1e6,
                higher_is_better=False, note=note if q == 50 else "raw column: Mesh.request")
            for q in (50, 99)]
