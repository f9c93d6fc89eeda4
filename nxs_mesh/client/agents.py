"""Where each agent lives: the NXS_AGENTS key-value bucket, read side (``mesh.agents``).

One key per agent id, its value a JSON record: the owner instance, the state (``active``,
``standby``, ``handing-off``, ``orphaned``), the ownership epoch, capabilities and since when (RFC
3339). Ownership changes only by compare-and-set on the key's revision (``node.agents`` writes).

    owner = await mesh.agents.resolve("agent:research")      # "nxs-node-002"
    await mesh.publish("CHAT", "hi", to_agent="agent:research")  # -> nxs.chat.nxs-node-002.agent:research

Resolutions are cached for ``ttl`` seconds (one KV read per agent per second at most); an unknown
or orphaned agent is never cached, so a registration or a new owner is seen at once.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from nxs_mesh.client.admin import Bucket, BucketSpec, MeshAdmin
from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import AgentNotFound, AgentOrphaned

__all__ = ["BUCKET", "AgentDirectory", "AgentRecord", "AgentState", "agent_key", "now_rfc3339"]

BUCKET: Final = "NXS_AGENTS"
SPEC: Final = BucketSpec(BUCKET, history=5, description="agent registry: owner, state, epoch per agent")


class AgentState(enum.StrEnum):
    ACTIVE = "active"  # its owner runs it now
    STANDBY = "standby"  # its owner stopped cleanly: messages wait for it there; another node may take it
    HANDING_OFF = "handing-off"  # moving to another owner (issue 11 part 2)
    ORPHANED = "orphaned"  # its owner died (the Doctor's death hook): nobody runs it


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def agent_key(agent: str) -> str:
    """The KV key of an agent id (ids may hold ':', KV keys may not; '=' is in no id)."""
    return check_id(agent, "agent").replace(":", "=")


@dataclass(frozen=True)
class AgentRecord:
    agent: str
    owner: str
    state: AgentState
    epoch: int
    capabilities: tuple[str, ...] = ()
    since: str = field(default_factory=now_rfc3339)
    revision: int = 0  # the KV revision it was read at (not stored)

    def encode(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "revision"}
        body["state"], body["capabilities"] = str(self.state), list(self.capabilities)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, revision: int) -> AgentRecord | None:
        """The record, or None when the value is not one (logged by the caller, treated as absent)."""
        try:
            raw = json.loads(data)
            return cls(agent=str(raw["agent"]), owner=str(raw["owner"]), state=AgentState(raw["state"]),
                       epoch=int(raw["epoch"]), capabilities=tuple(str(c) for c in raw.get("capabilities", ())),
                       since=str(raw.get("since", "")), revision=revision)
        except (ValueError, KeyError, TypeError):
            return None

    def moved(self, **changes: Any) -> AgentRecord:
        return replace(self, **changes)

    def age(self, now: datetime | None = None) -> float | None:
        """Seconds since ``since`` (None when it does not parse)."""
        try:
            then = datetime.fromisoformat(self.since.replace("Z", "+00:00"))
        except ValueError:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - then).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        age = self.age()
        return {"agent": self.agent, "owner": self.owner, "state": str(self.state), "epoch": self.epoch,
                "capabilities": list(self.capabilities), "since": self.since,
                "age": None if age is None else round(age, 1)}


class AgentDirectory:
    """Reads of NXS_AGENTS on one open Mesh, with a short resolution cache."""

    def __init__(self, admin: MeshAdmin, *, ttl: float = 1.0) -> None:
        self._admin, self.ttl = admin, ttl
        self._bucket: Bucket | None = None
        self._cache: dict[str, tuple[float, str]] = {}

    def __repr__(self) -> str:
        return f"<AgentDirectory {BUCKET} [{len(self._cache)} cached]>"

    async def bucket(self) -> Bucket:
        if self._bucket is None:
            self._bucket = await self._admin.bucket(SPEC)
        return self._bucket

    async def get(self, agent: str) -> AgentRecord | None:
        entry = await (await self.bucket()).get(agent_key(agent))
        return None if entry is None else AgentRecord.decode(entry.value, entry.revision)

    async def list(self) -> list[AgentRecord]:
        """Every registered agent, by id."""
        bucket = await self.bucket()
        out = []
        for key in await bucket.keys():
            entry = await bucket.get(key)
            rec = None if entry is None else AgentRecord.decode(entry.value, entry.revision)
            if rec is not None:
                out.append(rec)
        return sorted(out, key=lambda r: r.agent)

    async def resolve(self, agent: str) -> str:
        """The instance that owns ``agent`` now; AgentNotFound / AgentOrphaned when nobody does."""
        hit = self._cache.get(agent)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        rec = await self.get(agent)
        if rec is None:
            self._cache.pop(agent, None)
            raise AgentNotFound(f"agent {agent!r} is not registered (see `nxs agents`)", agent)
        if rec.state is AgentState.ORPHANED:
            self._cache.pop(agent, None)
            raise AgentOrphaned(f"agent {agent!r} is orphaned: its owner {rec.owner} died "
                                f"(since {rec.since}); nobody runs it until a node registers it again", agent)
        self._cache[agent] = (time.monotonic(), rec.owner)
        return rec.owner
