"""The prompt behind the Synadia front door survives the node's `kill -9` and restart (real `nxs node run
--sap` processes, the real `synadia-ai-agents` client): the caller's stream, acknowledged by the first
incarnation, is finished by the second, with its answer or with its error."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
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


@contextlib.asynccontextmanager
async def held_prompt(workers: Callable[..., Worker], mesh_config: MeshConfig, tmp_path: Path,
                      prompt: Any, timeout: float = 30) -> AsyncIterator[tuple[str, Worker, Any, list[Any], asyncio.Task[None]]]:
    """A `--sap` worker holding ``prompt`` (its handler started, the caller acked): (node id, worker, the
    SDK's agent handle, the chunks read so far, the reading task)."""
    node_id = unique_id("sap")
    first = workers(node_id, *sap_worker_args(tmp_path))
    nc = await open_sdk_connection(mesh_config, "caller")
    agents = Agents(nc=nc)
    try:
        async def found() -> Any:
            return next((a for a in await agents.discover(timeout=0.5) if a.metadata.get("nxs_node") == node_id), None)

        agent = await eventually(found, timeout=30, what=f"{node_id}'s helper discoverable")
        chunks: list[Any] = []
        reading = asyncio.create_task(read(agent, prompt, chunks, timeout))
        await eventually(lambda: "holding" in first.log() and chunks, timeout=20, what="the prompt held, acked")
        yield node_id, first, agent, chunks, reading
    finally:
        await agents.close()
        await nc.close()


async def read(agent: Any, prompt: Any, into: list[Any], timeout: float = 30) -> None:
    async for chunk in agent.prompt(prompt, timeout=timeout):
        into.append(chunk)


async def restart(workers: Callable[..., Worker], first: Worker, tmp_path: Path) -> tuple[Worker, int]:
    """kill -9, then the same node again; returns it and where its part of the shared log starts."""
    first.signal(signal.SIGKILL)
    assert await first.wait_exit() == -signal.SIGKILL
    before = len(first.log())  # both incarnations write one log file
    return workers(first.node_id, *sap_worker_args(tmp_path)), before


async def test_a_prompt_survives_kill_9_and_restart(workers: Callable[..., Worker], mesh_config: MeshConfig,
                                                    tmp_path: Path):
    async with held_prompt(workers, mesh_config, tmp_path, "hold") as (node_id, first, agent, chunks, reading):
        assert isinstance(chunks[0], StatusChunk) and chunks[0].status == "ack"
        # Queued behind the held one (one command at a time), acknowledged by the front door, never run here.
        refused: list[Any] = []
        refusing = asyncio.create_task(read(agent, "refuse", refused))
        await eventually(lambda: refused, timeout=20, what="the second prompt acked")
        await restart(workers, first, tmp_path)
        await asyncio.wait_for(reading, 40)
        with pytest.raises(ProtocolError, match=f"service error 500: refused by {node_id}"):
            await asyncio.wait_for(refusing, 40)
    texts = [c.text for c in chunks if isinstance(c, ResponseChunk)]
    assert texts == ["hold: ", f"answered by {node_id} on delivery 2"]
    assert [c.status for c in refused if isinstance(c, StatusChunk)][:1] == ["ack"]


async def test_a_prompt_whose_ttl_ran_out_meanwhile_is_not_run(workers: Callable[..., Worker],
                                                              mesh_config: MeshConfig, tmp_path: Path):
    """ttl 1 s: the redelivery (after the 2 s ack wait) finds it expired; the handler never runs again and
    the caller's own inactivity timeout ends its stream."""
    held = Envelope(prompt="hold", ttl=1)
    async with held_prompt(workers, mesh_config, tmp_path, held, timeout=6) as (_, first, _agent, chunks, reading):
        second, before = await restart(workers, first, tmp_path)
        with pytest.raises(ProtocolError, match="stalled|inactiv"):
            await asyncio.wait_for(reading, 30)
    assert [c for c in chunks if isinstance(c, ResponseChunk)] == []
    assert "serve the Synadia Agent Protocol" in second.log()[before:]
    assert "holding" not in second.log()[before:]  # the handler did not run again
