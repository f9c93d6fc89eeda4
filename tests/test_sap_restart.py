"""The prompt behind the Synadia front door survives the node's `kill -9` and restart (real `nxs node run
--sap` processes, the real `synadia-ai-agents` client): the caller's stream, acknowledged by the first
incarnation, is finished by the second, with its answer or with its error."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from node_support import Worker
from synadia_ai.agents import Agents, Envelope, ProtocolError, ResponseChunk, StatusChunk

from nxs_mesh import MeshConfig
from nxs_mesh.client.sap import open_sdk_connection
from nxs_mesh.testing import eventually, unique_id


def sap_worker_args(tmp_path: Path) -> list[str]:
    cfg = tmp_path / "nxs.toml"
    # A short ack wait: the dead incarnation's delivery comes back within 2 s instead of 30.
    cfg.write_text("[mesh]\nack_wait = 2\n")
    return ["--agent", "helper", "--sap", "--handlers", "tests.sap_agent:registry", "--config", str(cfg)]


async def find_agent(agents: Agents, node_id: str) -> Any:
    async def found() -> Any:
        return next((a for a in await agents.discover(timeout=0.5) if a.metadata.get("nxs_node") == node_id), None)

    return await eventually(found, timeout=30, what=f"{node_id}'s helper discoverable")


async def test_a_prompt_survives_kill_9_and_restart(workers: Callable[..., Worker], mesh_config: MeshConfig,
                                                    tmp_path: Path):
    node_id = unique_id("sap")
    args = sap_worker_args(tmp_path)
    first = workers(node_id, *args)
    nc = await open_sdk_connection(mesh_config, "caller")
    agents = Agents(nc=nc)
    try:
        agent = await find_agent(agents, node_id)
        chunks: list[Any] = []
        refused: list[Any] = []

        async def read(text: str, into: list[Any]) -> None:
            async for chunk in agent.prompt(text, timeout=30):
                into.append(chunk)

        reading = asyncio.create_task(read("hold", chunks))
        await eventually(lambda: "holding" in first.log() and chunks, timeout=20, what="the prompt held, acked")
        assert isinstance(chunks[0], StatusChunk) and chunks[0].status == "ack"
        # Queued behind the held one (one command at a time), acknowledged by the front door, never run here.
        refusing = asyncio.create_task(read("refuse", refused))
        await eventually(lambda: refused, timeout=20, what="the second prompt acked")
        first.signal(signal.SIGKILL)
        assert await first.wait_exit() == -signal.SIGKILL
        workers(node_id, *args)  # the same node, a new incarnation
        await asyncio.wait_for(reading, 40)
        with pytest.raises(ProtocolError, match=f"service error 500: refused by {node_id}"):
            await asyncio.wait_for(refusing, 40)
    finally:
        await agents.close()
        await nc.close()
    texts = [c.text for c in chunks if isinstance(c, ResponseChunk)]
    assert texts == ["hold: ", f"answered by {node_id} on delivery 2"]
    assert [c.status for c in refused if isinstance(c, StatusChunk)][:1] == ["ack"]


async def test_a_prompt_whose_ttl_ran_out_meanwhile_is_not_run(workers: Callable[..., Worker],
                                                              mesh_config: MeshConfig, tmp_path: Path):
    """ttl 1 s: the redelivery (after the 2 s ack wait) finds it expired; the handler never runs again and
    the caller's own inactivity timeout ends its stream."""
    node_id = unique_id("sap")
    args = sap_worker_args(tmp_path)
    first = workers(node_id, *args)
    nc = await open_sdk_connection(mesh_config, "caller")
    agents = Agents(nc=nc)
    try:
        agent = await find_agent(agents, node_id)
        chunks: list[Any] = []

        async def read() -> None:
            async for chunk in agent.prompt(Envelope(prompt="hold", ttl=1), timeout=6):
                chunks.append(chunk)

        reading = asyncio.create_task(read())
        await eventually(lambda: "holding" in first.log() and chunks, timeout=20, what="the prompt held, acked")
        first.signal(signal.SIGKILL)
        await first.wait_exit()
        before = len(first.log())  # both incarnations write one log file
        second = workers(node_id, *args)
        with pytest.raises(ProtocolError, match="stalled|inactiv"):
            await asyncio.wait_for(reading, 30)
    finally:
        await agents.close()
        await nc.close()
    assert [c for c in chunks if isinstance(c, ResponseChunk)] == []
    assert "serve the Synadia Agent Protocol" in second.log()[before:]
    assert "holding" not in second.log()[before:]  # the handler did not run again
