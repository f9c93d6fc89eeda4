"""Where each agent lives, write side: nodes register the agents they run; the Doctor orphans a dead
node's agents (the registry's read side and its record are in ``client.agents``).

Every write is a create or a compare-and-set on the revision just read, so two nodes racing for an
agent end with one owner:

- absent                      -> created: owner = this node, ``active``, epoch 1
- owned by this node          -> ``active`` again, the same epoch (a restart, a second registration)
- ``standby`` / ``orphaned``  -> taken: owner = this node, ``active``, epoch + 1
- ``active`` / ``handing-off`` on another node that still beats -> refused (``AgentOwned``); one whose
  last heartbeat is older than ``stale_after`` (dead, with no doctor to say so) is taken, epoch + 1

    records = await register_agents(mesh, "nxs-node-001", ["agent:research"], capabilities=("summarize",))
    node.death_hooks.append(orphan_hook(mesh))   # Node does this itself for its own Doctor
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from nxs_mesh.aio.retry import retrying
from nxs_mesh.client.agents import AgentRecord, AgentState, agent_key, encode_record, now_rfc3339
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.wire import subjects
from nxs_mesh.wire.errors import AgentError, AgentOwned, MeshError

__all__ = ["move_record", "orphan_agents", "orphan_hook", "register_agent", "register_agents", "stand_by_agents"]

log = logging.getLogger("nxs_mesh.node.agents")

_CAS_ROUNDS = 10  # a CAS lost this often in a row is a fight worth reporting, not retrying forever


async def register_agent(mesh: Mesh, owner: str, agent: str, *, capabilities: Sequence[str] = (),
                         stale_after: float = 15.0) -> AgentRecord:
    """Make ``owner`` the agent's active owner (see the module docstring); the record as written."""
    bucket, key = await mesh.agents.bucket(), agent_key(agent)
    for _ in range(_CAS_ROUNDS):
        entry = await bucket.get(key)
        old = mesh.agents.read(entry)  # a forged record (secure mode) reads as absent: it is replaced
        new = await _next_record(mesh, owner, agent, tuple(capabilities), old, stale_after)
        if entry is not None and old is None:  # replacing a record nobody believes: the epoch still never goes back
            raw = AgentRecord.decode(entry.value, entry.revision)
            new = new.moved(epoch=max(new.epoch, (raw.epoch if raw is not None else 0) + 1))
        if entry is None:
            rev = await bucket.create(key, encode_record(new, mesh.security))
        else:
            rev = await bucket.update(key, encode_record(new, mesh.security), last=entry.revision)
        if rev is not None:
            if old is not None and old.owner != owner:
                log.warning("agent %s taken over from %s (%s): epoch %d", agent, old.owner, old.state, new.epoch)
            return new.moved(revision=rev)
    raise AgentError(f"agent {agent!r}: lost {_CAS_ROUNDS} compare-and-set rounds in a row; "
                     "another node keeps writing its record", agent)


async def _next_record(mesh: Mesh, owner: str, agent: str, caps: tuple[str, ...], old: AgentRecord | None,
                       stale_after: float) -> AgentRecord:
    if old is None:
        return AgentRecord(agent, owner, AgentState.ACTIVE, 1, caps)
    if old.owner == owner:
        since = old.since if old.state is AgentState.ACTIVE else now_rfc3339()
        return old.moved(state=AgentState.ACTIVE, capabilities=caps, since=since)
    if old.state in (AgentState.ACTIVE, AgentState.HANDING_OFF) and await _beats(mesh, old.owner, stale_after):
        raise AgentOwned(f"agent {agent!r} is {old.state} on {old.owner} (epoch {old.epoch}, since {old.since}), "
                         "which is alive: not taken from it (stop it there first)", agent)
    return AgentRecord(agent, owner, AgentState.ACTIVE, old.epoch + 1, caps)


async def _beats(mesh: Mesh, node: str, stale_after: float) -> bool:
    """True when ``node``'s last stored heartbeat is younger than ``stale_after`` seconds."""
    rec = await mesh.last("heartbeat", subjects.heartbeat(node))
    if rec is None:
        return False
    return (datetime.now(UTC) - rec.stored_at).total_seconds() < stale_after


async def register_agents(mesh: Mesh, owner: str, agents: Iterable[str], *, capabilities: Sequence[str] = (),
                          stale_after: float = 15.0, timeout: float = 60.0) -> list[AgentRecord]:
    """Register each agent, retried through transient failures; an ``AgentError`` is raised at once."""
    out = []
    for agent in agents:
        async def once(agent: str = agent) -> AgentRecord | AgentError:
            try:
                return await register_agent(mesh, owner, agent, capabilities=capabilities, stale_after=stale_after)
            except AgentError as exc:  # not transient: never retried
                return exc

        got = await retrying(once, f"registering agent {agent}", timeout=timeout)
        if isinstance(got, AgentError):
            raise got
        log.info("agent %s registered on %s (epoch %d)", agent, owner, got.epoch)
        out.append(got)
    return out


async def _move_owned(mesh: Mesh, owner: str, agents: Iterable[str] | None, to: AgentState,
                      states: tuple[AgentState, ...]) -> list[str]:
    """CAS every record owned by ``owner`` in one of ``states`` (of ``agents``, or all) to ``to``."""
    bucket, moved = await mesh.agents.bucket(), []
    keys = [agent_key(a) for a in agents] if agents is not None else await bucket.keys()
    for key in keys:
        for _ in range(_CAS_ROUNDS):
            entry = await bucket.get(key)
            rec = mesh.agents.read(entry)
            if entry is None or rec is None or rec.owner != owner or rec.state not in states:
                break
            new = rec.moved(state=to, since=now_rfc3339())
            if await bucket.update(key, encode_record(new, mesh.security), last=entry.revision) is not None:
                moved.append(rec.agent)
                break
    return sorted(moved)


async def move_record(mesh: Mesh, rec: AgentRecord, new: AgentRecord) -> AgentRecord | None:
    """Compare-and-set ``rec`` (as read, its revision) to ``new``, signed; the record written, or None
    when someone wrote the key since (the caller reads again and decides)."""
    bucket = await mesh.agents.bucket()
    rev = await bucket.update(agent_key(rec.agent), encode_record(new, mesh.security), last=rec.revision)
    return None if rev is None else new.moved(revision=rev)


async def orphan_agents(mesh: Mesh, node: str) -> list[str]:
    """Mark every agent the (dead) ``node`` owns ``orphaned``; the ids marked."""
    orphaned = await _move_owned(mesh, node, None, AgentState.ORPHANED,
                                 (AgentState.ACTIVE, AgentState.STANDBY, AgentState.HANDING_OFF))
    if orphaned:
        log.warning("agents of dead node %s orphaned: %s", node, ", ".join(orphaned))
    return orphaned


def orphan_hook(mesh: Mesh) -> Callable[[str], Awaitable[Mapping[str, Any]]]:
    """A Doctor death hook: orphans the dead node's agents; the alert then lists them."""

    async def orphan_dead_nodes_agents(node: str) -> Mapping[str, Any]:
        orphaned = await orphan_agents(mesh, node)
        return {"orphaned_agents": orphaned} if orphaned else {}

    return orphan_dead_nodes_agents


async def stand_by_agents(mesh: Mesh | None, owner: str, agents: Sequence[str], *, timeout: float = 2.0) -> None:
    """On a clean stop: this node's active agents go ``standby`` (another node may take them). Best effort,
    bounded: a node that cannot write it leaves them active, which the Doctor does not orphan (no death)."""
    if mesh is None or not agents or not mesh.is_connected:
        return
    try:
        async with asyncio.timeout(timeout):
            done = await _move_owned(mesh, owner, agents, AgentState.STANDBY, (AgentState.ACTIVE,))
        log.info("agents on standby: %s", ", ".join(done) or "-")
    except (MeshError, TimeoutError) as exc:
        log.warning("could not put agents %s on standby: %s", ", ".join(agents), exc)
