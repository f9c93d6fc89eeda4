"""Where each agent lives: the NXS_AGENTS key-value bucket, read side (``mesh.agents``).

One key per agent id, its value a JSON record: the owner instance, the state (``active``,
``standby``, ``handing-off``, ``orphaned``), the ownership epoch, capabilities and since when (RFC
3339). Ownership changes only by compare-and-set on the key's revision (``node.agents`` writes).

    owner = await mesh.agents.resolve("agent:research")      # "nxs-node-002"
    await mesh.publish("CHAT", "hi", to_agent="agent:research")  # -> nxs.chat.nxs-node-002.agent:research

Resolutions are cached for ``ttl`` seconds (one KV read per agent per second at most); an unknown
or orphaned agent is never cached, so a registration or a new owner is seen at once.

With a trust file, records are signed by their writer (``wire.signing.sign_record``, like task claims)
and believed only when the signer is the owner's key, or, for an ``orphaned`` record, any trusted
node's (the Doctor that saw the owner die): a node cannot forge another's ownership; a record that
fails reads as absent. Fencing: an owner stamps what it publishes as the agent with its epoch
(``metadata.agent_epoch``); ``stale(env)`` tells a receiver it came from an owner the registry moved past.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from nxs_mesh.client.admin import Bucket, BucketSpec, MeshAdmin
from nxs_mesh.transport.buckets import Entry
from nxs_mesh.wire.envelope import Envelope, check_id
from nxs_mesh.wire.errors import AgentNotFound, AgentOrphaned
from nxs_mesh.wire.signing import record_signed_by, sign_record

if TYPE_CHECKING:
    from nxs_mesh.client.security import MessageSecurity

__all__ = ["BUCKET", "EPOCH_KEY", "AgentDirectory", "AgentRecord", "AgentState", "agent_key", "encode_record",
           "now_rfc3339"]

log = logging.getLogger("nxs_mesh.client.agents")

BUCKET: Final = "NXS_AGENTS"
#: Envelope metadata an owner stamps on what it publishes as the agent: its ownership epoch (fencing).
EPOCH_KEY: Final = "agent_epoch"
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


def encode_record(rec: AgentRecord, security: MessageSecurity | None) -> bytes:
    """The stored value of ``rec``: signed by this client's key when it has one."""
    signer = security.signer if security is not None else None
    if signer is None:
        return rec.encode()
    body = rec.encode()[:-1] + b',"signer":"' + signer.public.encode() + b'"}'
    return sign_record(signer, agent_key(rec.agent), body)


def believed(rec: AgentRecord, value: bytes, security: MessageSecurity | None) -> bool:
    """Whether a stored record may be believed (see the module docstring); always, without a trust file."""
    trust = security.trust if security is not None else None
    if trust is None or security is None or (b'"sig":"' not in value and not security.secure):
        return True  # no keys to check against, or an unsigned record in an open mesh
    try:
        signer = json.loads(value).get("signer")
    except ValueError:
        return False
    if not isinstance(signer, str) or not record_signed_by(signer, agent_key(rec.agent), value):
        return False
    if signer == trust.signer_of(rec.owner):
        return True
    return rec.state is AgentState.ORPHANED and signer in {k.sign for k in trust.nodes.values()}


class AgentDirectory:
    """Reads of NXS_AGENTS on one open Mesh, with a short resolution cache."""

    def __init__(self, admin: MeshAdmin, *, ttl: float = 1.0, security: MessageSecurity | None = None) -> None:
        self._admin, self.ttl, self.security = admin, ttl, security
        self._bucket: Bucket | None = None
        self._cache: dict[str, tuple[float, str]] = {}

    def __repr__(self) -> str:
        return f"<AgentDirectory {BUCKET} [{len(self._cache)} cached]>"

    async def bucket(self) -> Bucket:
        if self._bucket is None:
            self._bucket = await self._admin.bucket(SPEC)
        return self._bucket

    def read(self, entry: Entry | None) -> AgentRecord | None:
        """The record a stored entry holds, or None (absent, not a record, or not believed)."""
        rec = None if entry is None else AgentRecord.decode(entry.value, entry.revision)
        if rec is None or entry is None or believed(rec, entry.value, self.security):
            return rec
        log.warning("agent %s: ignoring a registry record its owner %s did not sign", rec.agent, rec.owner)
        return None

    async def get(self, agent: str) -> AgentRecord | None:
        return self.read(await (await self.bucket()).get(agent_key(agent)))

    async def stale(self, env: Envelope) -> bool:
        """True when ``env`` was published as a registered agent by an owner the registry moved past
        (an older ``agent_epoch``, or another instance at the same epoch): a fenced, stale owner."""
        epoch = env.payload.metadata.get(EPOCH_KEY)
        if not isinstance(epoch, int) or env.source.agent_id in ("", "*"):
            return False
        rec = await self.get(env.source.agent_id)
        if rec is None:
            return False
        return epoch < rec.epoch or (epoch == rec.epoch and env.source.instance_id != rec.owner)

    async def list(self) -> list[AgentRecord]:
        """Every registered agent, by id."""
        bucket = await self.bucket()
        out = []
        for key in await bucket.keys():
            rec = self.read(await bucket.get(key))
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
