"""Helpers for the handoff tests: workers that pause at a named step, and what an agent received.

(No tests here.)
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node_support import Worker

from nxs_mesh import Mesh
from nxs_mesh.client.agents import AgentRecord, AgentState
from nxs_mesh.node.pause import ENV as PAUSE_ENV
from nxs_mesh.testing import eventually

AGENT = "agent:research"


async def chat(mesh: Mesh, *texts: str, agent: str = AGENT) -> None:
    """Send each text to ``agent`` wherever it lives (resolved through the registry)."""
    for text in texts:
        await mesh.publish("CHAT", text, to_agent=agent)


def start_pausing(workers: Callable[..., Worker], node_id: str, step: str, *extra: str, **timing: float) -> Worker:
    """A worker that stops itself (SIGSTOP) at ``step`` (the ``NXS_PAUSE_AT`` test hook)."""
    os.environ[PAUSE_ENV] = step
    try:
        return workers(node_id, *extra, **timing)
    finally:
        del os.environ[PAUSE_ENV]


async def paused(w: Worker, step: str, timeout: float = 30.0) -> None:
    await eventually(lambda: f"paused at {step}" in w.log(), timeout=timeout, interval=0.05,
                     what=f"{w.node_id} paused at {step}")


def kill9(w: Worker) -> None:
    """SIGKILL as it stands (Worker.kill would SIGCONT first and let it run an instant)."""
    assert w.proc is not None
    os.kill(w.pid, signal.SIGKILL)
    w.proc.wait(10)


def resume(w: Worker) -> None:
    os.kill(w.pid, signal.SIGCONT)


def history(w: Worker, agent: str) -> list[dict[str, Any]]:
    """What the default agent of worker ``w`` holds of ``agent``'s conversation (AgentFiles)."""
    path = Path(w.log_path.parent) / f"data-{w.node_id}" / "agents" / w.node_id / agent.replace(":", "=") / \
        "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def contents(w: Worker, agent: str, n: int, timeout: float = 20.0) -> list[Any]:
    """Wait until ``w`` holds at least ``n`` history lines of ``agent``; their contents."""
    await eventually(lambda: len(history(w, agent)) >= n, timeout=timeout, interval=0.05,
                     what=f"{n} messages of {agent} on {w.node_id}")
    return [h["content"] for h in history(w, agent)]


async def record_is(mesh: Mesh, agent: str, owner: str, state: AgentState, epoch: int,
                    timeout: float = 20.0) -> AgentRecord:
    async def check() -> AgentRecord | None:
        rec = await mesh.agents.get(agent)
        return rec if rec is not None and (rec.owner, rec.state, rec.epoch) == (owner, state, epoch) else None

    found: AgentRecord = await eventually(check, timeout=timeout, interval=0.05,
                                          what=f"{agent} {state} on {owner} at epoch {epoch}")
    return found
