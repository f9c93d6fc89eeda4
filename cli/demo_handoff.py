"""The handoff part of `nxs demo`: an agent chats on a VPS node, the user says "switch to home
instance", the agent moves with its conversation and says where it continues from.

    await demo_handoff(url, work, say)      # starts (and stops) its own two worker processes
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["AGENT", "demo_handoff"]

AGENT = "agent:assistant"
_NODES = (("demo-vps", "vps-singapore"), ("demo-home", "home-lab"))


def _spawn(url: str, node: str, location: str, work: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", "from nxs_cli.app import main; main()", "--url", url, "node", "run",
            "--id", node, "--location", location, "--heartbeat", "0.5", "--dead-after", "2.5", "--no-doctor",
            "--no-plugins", "--log-level", "WARNING", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NXS_DATA_DIR": str(work / node)}
    with (work / f"{node}.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)


def _history(work: Path, node: str) -> list[dict[str, Any]]:
    from nxs_mesh.node.agent_context import AgentFiles

    return AgentFiles(work / node / "agents" / node).history(AGENT)


async def demo_handoff(url: str, work: Path, say: Callable[[str], None]) -> None:
    from nxs_mesh import Mesh, MeshConfig
    from nxs_mesh.aio.waiting import wait_until

    (vps, vps_loc), (home, home_loc) = _NODES
    procs = [_spawn(url, vps, vps_loc, work, "--agent", AGENT), _spawn(url, home, home_loc, work)]
    try:
        async with Mesh(MeshConfig(servers=(url,), instance_id="demo-user", agent_id="user")) as mesh:
            await wait_until(lambda: _owner(mesh), 30, f"{AGENT} registered on {vps}")
            for text in ("find papers on mesh networks", "summarise the top three", "draft an email to Ana"):
                await mesh.publish("CHAT", text, to_agent=AGENT)
            await wait_until(lambda: len(_history(work, vps)) >= 3, 20, f"{AGENT} heard the chat on {vps}")
            say(f"{AGENT} on {vps} ({vps_loc}) has {len(_history(work, vps))} messages of conversation")
            say(f"user: [italic]switch to home instance[/] -> mesh.handoff({AGENT!r}, to={home!r})")
            outcome = await mesh.handoff(AGENT, to=home, timeout=20,
                                         on_step=lambda step: say(f"  handoff step: {step}"))
            steps = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in outcome.steps.items())
            say(f"  committed: owner {outcome.to_node}, epoch {outcome.epoch} ({steps})")
            say(f"{home}: [green]{outcome.ready}[/]")
            await mesh.publish("CHAT", "and send it from home", to_agent=AGENT)
            await wait_until(lambda: len(_history(work, home)) >= 4, 20, f"{AGENT} answering on {home}")
            say(f"the next message reached {home}: {len(_history(work, home))} messages there, "
                f"{len(_history(work, vps))} left on {vps} (standby)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 15)
            except subprocess.TimeoutExpired:
                p.kill()


async def _owner(mesh: Any) -> str | None:
    rec = await mesh.agents.get(AGENT)
    return None if rec is None else str(rec.owner)
