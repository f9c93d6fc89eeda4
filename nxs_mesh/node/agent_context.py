"""An agent's context as a handoff moves it, and the default agent of ``nxs node run --agent``.

    async def load(ctx: HandoffContext) -> str | None:      # the target's loader
        state = ctx.json()                                   # or ctx.read_bytes(), or read ctx.path
        return f"Continuing from {state['last']}"           # the "I'm ready. ..." line

``AgentFiles`` is what a worker runs for an agent when no program supplies handlers: it keeps the
agent's conversation history (each CHAT it receives, one JSON line) and its memory (``memory.json``)
under ``<data_dir>/agents/<node>/<agent>/``; its context bundle is both, as one JSON object, and
loading one writes them on the new node. Enough to move a conversation and prove nothing was lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxs_mesh.client.agents import now_rfc3339
from nxs_mesh.wire.envelope import Envelope

__all__ = ["AgentFiles", "HandoffContext"]


@dataclass(frozen=True)
class HandoffContext:
    """A context bundle the target received (SHA-256 checked), with where it comes from."""

    agent: str
    from_node: str
    epoch: int  # the epoch the agent had on its previous owner
    path: Path  # the bundle as downloaded
    size: int
    digest: str

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def json(self) -> Any:
        return json.loads(self.path.read_bytes())


class AgentFiles:
    """History and memory of agents on disk (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"<AgentFiles {self.root}>"

    def dir(self, agent: str) -> Path:
        return self.root / agent.replace(":", "=")

    def history(self, agent: str) -> list[dict[str, Any]]:
        path = self.dir(agent) / "history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def memory(self, agent: str) -> dict[str, Any]:
        path = self.dir(agent) / "memory.json"
        loaded = json.loads(path.read_text()) if path.exists() else {}
        return loaded if isinstance(loaded, dict) else {}

    async def on_message(self, agent: str, env: Envelope) -> None:
        """Remember a message the agent received (its history line) and how many it has seen (memory)."""
        d = self.dir(agent)
        d.mkdir(parents=True, exist_ok=True)
        line = {"id": env.id, "from": f"{env.source.instance_id}/{env.source.agent_id}", "content": env.content,
                "at": now_rfc3339()}
        with (d / "history.jsonl").open("a") as f:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
        memory = self.memory(agent)
        memory["messages"] = int(memory.get("messages", 0)) + 1
        (d / "memory.json").write_text(json.dumps(memory))

    async def provide(self, agent: str) -> dict[str, Any]:
        """The context bundle: conversation history, memory state, active tasks (none in this agent)."""
        return {"agent": agent, "history": self.history(agent), "memory": self.memory(agent), "tasks": []}

    async def load(self, ctx: HandoffContext) -> str:
        """Write a received bundle as this node's copy; says where the conversation continues from. A
        bundle that is not this class's JSON (a program's own context) is kept as ``context.bin``."""
        d = self.dir(ctx.agent)
        d.mkdir(parents=True, exist_ok=True)
        try:
            bundle = ctx.json()
        except ValueError:
            bundle = None
        if not isinstance(bundle, dict):
            (d / "context.bin").write_bytes(ctx.read_bytes())
            return f"Continuing from a {ctx.size}-byte context from {ctx.from_node}."
        history = [h for h in bundle.get("history", []) if isinstance(h, dict)]
        (d / "history.jsonl").write_text("".join(json.dumps(h, separators=(",", ":")) + "\n" for h in history))
        memory = bundle.get("memory")
        (d / "memory.json").write_text(json.dumps(memory if isinstance(memory, dict) else {}))
        if not history:
            return f"Continuing from {ctx.from_node}, with no history yet."
        return f"Continuing from message {len(history)}: {str(history[-1].get('content'))[:60]!r}."
