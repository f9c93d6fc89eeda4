"""Synadia's agent SDK as a request/reply anchor: an ``AgentService`` echo agent prompted through
``Agents`` (``synadia-ai-agents`` + ``synadia-ai-agent-service``, the ``bench`` extra), same server,
same run. A prompt round trip is timed from ``prompt()`` to the stream's ``done`` status.

Optional: without the packages (or when the SDK fails here) the result says why and has no samples,
so the row shows the reason instead of a figure.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from importlib import metadata

import nats

__all__ = ["SdkResult", "sdk_prompt"]

_DISTS = ("synadia-ai-agents", "synadia-ai-agent-service")


@dataclass(frozen=True)
class SdkResult:
    #: Round trips in seconds; empty when the SDK could not run (``what`` says why).
    samples: list[float] = field(default_factory=list)
    what: str = ""


def _versions() -> str:
    return ", ".join(f"{d} {metadata.version(d)}" for d in _DISTS)


async def sdk_prompt(url: str, text: str, n: int, *, warmup: int = 0) -> SdkResult:
    """Prompt an echo agent ``n`` times (after ``warmup``); never raises for a missing or broken SDK."""
    try:
        from synadia_ai.agent_service import AgentService
        from synadia_ai.agents import Agents, StatusChunk
        from synadia_ai.agents.discovery import DiscoverFilter
        versions = _versions()
    except (ImportError, metadata.PackageNotFoundError) as exc:
        return SdkResult(what=f"Synadia SDK not installed ({exc}); `pip install -e '.[bench]'`")
    host = await nats.connect(url, name="bench-sdk-agent", max_reconnect_attempts=0)
    caller = await nats.connect(url, name="bench-sdk-caller", max_reconnect_attempts=0)
    service = AgentService(agent="nxs-bench", owner="nxs", session_name="echo", nc=host, description="bench echo")

    async def echo(envelope: object, stream: object) -> None:
        await stream.send(envelope.prompt)  # type: ignore[attr-defined]

    service.on_prompt(echo)
    agents = Agents(nc=caller)
    try:
        await service.start()
        found = await agents.discover(filter=DiscoverFilter(agent="nxs-bench"))
        if not found:
            return SdkResult(what="Synadia SDK: the echo agent was not discovered")
        agent = found[0]
        out: list[float] = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            async for chunk in agent.prompt(text):
                if isinstance(chunk, StatusChunk) and chunk.status == "done":
                    break
            if i >= warmup:
                out.append(time.perf_counter() - t0)
        return SdkResult(out, f"Synadia agent SDK prompt to an echo AgentService ({versions})")
    except Exception as exc:  # noqa: BLE001 - an anchor that cannot run is reported, not fatal
        return SdkResult(what=f"Synadia SDK failed here: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        for close in (agents.close, service.stop, caller.close, host.close):
            with contextlib.suppress(Exception):  # best effort: the bench closes the server anyway
                await close()
