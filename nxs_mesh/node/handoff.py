"""The node's side of agent handoff (protocol in ``client.handoff``): a part that gives and takes agents.

    service = HandoffService()          # default: AgentFiles under the data dir (history + memory)

    @service.load
    async def load(ctx: HandoffContext) -> str | None:    # the target: returns when the context is loaded
        ...

    @service.provide
    async def provide(agent: str) -> bytes | dict:        # the owner: the agent's context, packaged
        ...

    @service.on_message
    async def chat(agent: str, env: Envelope) -> None:    # what the agent receives, wherever it lives
        ...

    node.parts.append(service)          # before start; `nxs node run` adds one itself

It consumes its node's SYNC subjects (durable ``handoff-<node>``) for the protocol's steps, and for each
agent the node owns one durable consumer on NXS_CHAT filtered on ``nxs.chat.*.<agent>``
(``agent-<agent>``, exactly once): the agent's messages, whoever sent them to whichever owner. What a
stale owner (an older epoch) publishes as the agent is fenced: its messages to the agent are
dead-lettered (``client.agents.AgentDirectory.stale``). Failure handling: see ``client.handoff``;
``node.pause`` is the test hook that stops the process at a named step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.aio.waiting import wait_until
from nxs_mesh.client.agents import EPOCH_KEY, AgentRecord, AgentState, now_rfc3339
from nxs_mesh.client.consumer import Consumer
from nxs_mesh.client.handoff import (
    KIND,
    VERSION,
    agent_durable,
    agent_filter,
    bundle_name,
    context_source,
    refusal,
    sync_durable,
)
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.node.agent_context import AgentFiles, HandoffContext
from nxs_mesh.node.agents import move_record, stand_by_agents
from nxs_mesh.node.handoff_command import add_handoff_command
from nxs_mesh.node.parts import NodeHost
from nxs_mesh.node.pause import pause_at
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, Source, new_envelope
from nxs_mesh.wire.errors import ClosedError, HandoffError, MeshError, MeshTimeout, Reject

__all__ = ["AgentFiles", "HandoffContext", "HandoffService", "provisioned_consumers"]

log = logging.getLogger("nxs_mesh.node.handoff")

Provider = Callable[[str], Awaitable[Any]]
Loader = Callable[[HandoffContext], Awaitable[str | None]]
OnMessage = Callable[[str, Envelope], Awaitable[None]]
_STEPS = {KIND[s]: s for s in ("offer", "prepare", "commit", "release", "abort")}


def provisioned_consumers(nodes: Iterable[str], agents: Iterable[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(stream, durable, filters) of what admin creates so that secure nodes can hand agents off (they may
    not create consumers): each node's SYNC consumer and each agent's CHAT consumer."""
    out = [("NXS_SYNC", sync_durable(n), tuple(subjects.filters_for("sync", n))) for n in sorted(set(nodes))]
    return out + [("NXS_CHAT", agent_durable(a), (agent_filter(a),)) for a in sorted(set(agents))]


class _Held:
    """An agent this node owns: its epoch, its message consumer and where a handoff of it stands."""

    def __init__(self, agent: str, epoch: int) -> None:
        self.agent, self.epoch = agent, epoch
        self.state = AgentState.ACTIVE
        self.consumer: Consumer | None = None
        self.handoff_id = ""


class HandoffService:
    """A ``NodePart``: gives the node's agents away and takes others in (see the module docstring)."""

    name = "handoff"

    def __init__(self, *, provider: Provider | None = None, loader: Loader | None = None,
                 on_message: OnMessage | None = None, max_agents: int = 0, drain_timeout: float = 30.0) -> None:
        self._provider, self._loader, self._on_message = provider, loader, on_message
        self.max_agents, self.drain_timeout = max_agents, drain_timeout
        self.files: AgentFiles | None = None  # the default agent's, once started
        self.held: dict[str, _Held] = {}
        self.standby: dict[str, str] = {}  # agents handed away: agent -> its new owner
        self._reserved: dict[str, tuple[str, float]] = {}  # accepted offers: agent -> (handoff id, expiry)
        self._taken: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._mesh: Mesh | None = None
        self._node: NodeHost | None = None
        self._sync: Consumer | None = None
        self._sup = Supervisor("handoff")

    def __repr__(self) -> str:
        me = self._node.node_id if self._node is not None else "-"
        return (f"<HandoffService {me} [{len(self.held)} agents, {len(self._reserved)} offers, "
                f"{len(self.standby)} standby]>")

    # -- registration ---------------------------------------------------------------------------------
    def provide(self, fn: Provider) -> Provider:
        self._provider = fn
        return fn

    def load(self, fn: Loader) -> Loader:
        self._loader = fn
        return fn

    def on_message(self, fn: OnMessage) -> OnMessage:
        self._on_message = fn
        return fn

    # -- part lifecycle -------------------------------------------------------------------------------
    @property
    def mesh(self) -> Mesh:
        if self._mesh is None:
            raise ClosedError("the handoff service is not running")
        return self._mesh

    @property
    def me(self) -> str:
        assert self._node is not None
        return self._node.node_id

    async def start(self, node: NodeHost) -> None:
        if node.mesh is None:
            raise ClosedError("the node has no connection")
        self._node, self._mesh = node, node.mesh
        add_handoff_command(node.registry)  # the protocol as one COMMAND, for clients that do not speak it
        self.files = AgentFiles(Path(node.config.data_dir) / "agents" / node.node_id)
        for agent in node.options.agents:  # registered by the node just before its parts start
            rec = await self.mesh.agents.get(agent)
            if rec is not None and rec.owner == self.me:
                await self._bind(self._hold_new(agent, rec.epoch))
        self._sync = await self.mesh.consume(
            "sync", self._on_sync, durable=sync_durable(self.me), concurrency=4,
            fetch_timeout=node.options.fetch_timeout)

    async def stop(self, grace: float) -> None:
        await self._sup.stop(timeout=0)
        consumers = [c for c in [self._sync, *(h.consumer for h in self.held.values())] if c is not None]
        await asyncio.gather(*(c.stop(grace) for c in consumers), return_exceptions=True)
        if self._mesh is not None:  # what it took in goes standby like the node's own (node._teardown)
            await stand_by_agents(self._mesh, self.me, sorted(self._taken & set(self.held)))
        self._mesh = None

    # -- the agent's messages -------------------------------------------------------------------------
    def _hold_new(self, agent: str, epoch: int) -> _Held:
        held = self.held[agent] = _Held(agent, epoch)
        self.standby.pop(agent, None)
        return held

    async def _bind(self, held: _Held) -> Consumer:
        agent = held.agent

        async def handle(env: Envelope) -> None:
            if EPOCH_KEY in env.payload.metadata and await self.mesh.agents.stale(env):
                raise Reject(f"fenced: published as {env.source.agent_id} by {env.source.instance_id} at epoch "
                             f"{env.payload.metadata[EPOCH_KEY]}, an owner the registry moved past")
            await (self._on_message or self._files().on_message)(agent, env)

        held.consumer = await self.mesh.consume(
            "chat", handle, durable=agent_durable(agent), filters=[agent_filter(agent)], exactly_once=True)
        return held.consumer

    async def _drain(self, consumer: Consumer) -> int:
        """Wait until the agent's durable holds nothing undelivered or unacknowledged; how many were handled."""
        before = consumer.stats.handled

        async def drained() -> bool:
            report = await self.mesh.admin.consumer("NXS_CHAT", consumer.spec.durable)
            return report is not None and report.backlog == 0 and consumer.inflight == 0

        try:
            await wait_until(drained, self.drain_timeout, f"{consumer.spec.durable} drained", interval=0.02)
        except MeshTimeout:  # committed already: the rest is handled as it comes, just not before "ready"
            log.warning("%s: not drained within %.0fs; announcing ready anyway", consumer.spec.durable,
                        self.drain_timeout)
        return consumer.stats.handled - before

    def _files(self) -> AgentFiles:
        assert self.files is not None
        return self.files

    async def publish_as(self, agent: str, message_type: str, content: Any, *, to: str = "*",
                         target_agent: str = "*", metadata: dict[str, Any] | None = None) -> None:
        """Publish as ``agent``, stamped with its ownership epoch here (receivers fence a stale owner)."""
        held = self.held.get(agent)
        if held is None:
            raise HandoffError(f"{self.me} does not run agent {agent!r}", agent)
        loc = self._node.config.location if self._node is not None else ""
        env = new_envelope(message_type, content, source=Source(self.me, agent, loc), to=to, agent=target_agent,
                           metadata={**(metadata or {}), EPOCH_KEY: held.epoch})
        await self.mesh.send(env)

    # -- the protocol ---------------------------------------------------------------------------------
    async def _on_sync(self, env: Envelope) -> None:
        c = env.content
        step = _STEPS.get(c.get("kind", "")) if isinstance(c, dict) else None
        if step is None or not isinstance(c, dict) or not isinstance(c.get("agent"), str):
            return  # a file notice, a "ready" broadcast, someone else's sync: not ours to answer
        agent = str(c["agent"])
        async with self._locks.setdefault(agent, asyncio.Lock()):
            try:
                answer = await getattr(self, f"_{step}")(agent, c)
            except (MeshError, OSError, ValueError, KeyError, TypeError) as exc:  # a bad request: say why
                log.warning("handoff %s of %s: %s", step, agent, exc)
                await self.mesh.reply(env, error=str(exc))
                return
        await self.mesh.reply(env, answer)

    async def _offer(self, agent: str, c: dict[str, Any]) -> dict[str, Any]:
        why = self._refusal(agent, c)
        if why:
            log.info("handoff offer of %s from %s refused: %s", agent, c.get("from"), why)
            return {"accept": False, "why": why}
        expiry = asyncio.get_running_loop().time() + float(c.get("hold") or 90.0)  # a caller that vanished
        self._reserved[agent] = (str(c["id"]), expiry)
        return {"accept": True, "node": self.me}

    def _offered(self, agent: str, handoff_id: Any) -> bool:
        """Whether ``handoff_id`` is the live accepted offer of ``agent`` (expired ones are dropped)."""
        now = asyncio.get_running_loop().time()
        for other, (_, expiry) in list(self._reserved.items()):
            if expiry < now:
                del self._reserved[other]
        return bool(self._reserved.get(agent, ("", 0.0))[0] == handoff_id)

    def _refusal(self, agent: str, c: dict[str, Any]) -> str:
        if c.get("version") != VERSION:
            return f"protocol version {c.get('version')!r}; {self.me} speaks {VERSION}"
        assert self._node is not None
        caps = {*self._node.options.capabilities, *self._node.registry.tasks}
        missing = sorted(set(c.get("needs") or ()) - caps)
        if missing:
            return f"{self.me} lacks capability {', '.join(missing)}"
        if agent in self.held:
            return f"{self.me} already runs {agent}"
        self._offered(agent, None)  # drops expired offers before counting
        busy = len(self.held) + len(set(self._reserved) - {agent})
        if self.max_agents and busy >= self.max_agents:
            return f"{self.me} is at capacity: {busy} of at most {self.max_agents} agents"
        return ""

    async def _prepare(self, agent: str, c: dict[str, Any]) -> dict[str, Any]:
        held = self.held.get(agent)
        rec = await self.mesh.agents.get(agent)
        if held is None or held.state is not AgentState.ACTIVE or rec is None or rec.owner != self.me \
                or rec.state is not AgentState.ACTIVE or rec.epoch != c.get("epoch"):
            raise HandoffError(f"{self.me} cannot give {agent!r}: the registry says "
                               f"{rec.state if rec else 'absent'} on {rec.owner if rec else '-'}", agent, "prepare")
        if held.consumer is not None:
            await held.consumer.stop(self._node.options.grace if self._node else 10.0)  # in-flight ones finish
            held.consumer = None
        moved = await move_record(self.mesh, rec, rec.moved(state=AgentState.HANDING_OFF, since=now_rfc3339()))
        if moved is None:
            await self._bind(held)
            raise HandoffError(f"{agent!r}: its record changed under the handoff", agent, "prepare")
        held.state, held.handoff_id = AgentState.HANDING_OFF, str(c["id"])
        bundle = c.get("bundle") or await self._package(agent, str(c["id"]))
        pause_at("prepared")
        self._sup.spawn(f"hold {agent}", self._hold(agent, held.handoff_id, float(c.get("hold") or 90.0)))
        return {"revision": moved.revision, "bundle": bundle}

    async def _package(self, agent: str, handoff_id: str) -> dict[str, Any]:
        context = await (self._provider or self._files().provide)(agent)
        info = await self.mesh.files.put(context_source(context), name=bundle_name(agent, handoff_id))
        return {"name": info.name, "size": info.size, "digest": info.digest}

    async def _hold(self, agent: str, handoff_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)  # sleep-ok: this is the step's timeout (nobody came back to commit)
        async with self._locks.setdefault(agent, asyncio.Lock()):
            held = self.held.get(agent)
            if held is not None and held.handoff_id == handoff_id and held.state is AgentState.HANDING_OFF:
                log.warning("handoff of %s: no commit within %.0fs; rolling back", agent, seconds)
                await self._roll_back(held)

    async def _roll_back(self, held: _Held) -> None:
        """Back to the last committed owner: this node, active again, unless the commit happened."""
        rec = await self.mesh.agents.get(held.agent)
        if rec is not None and rec.owner == self.me and rec.state is AgentState.HANDING_OFF:
            if await move_record(self.mesh, rec, rec.moved(state=AgentState.ACTIVE, since=now_rfc3339())):
                held.state, held.handoff_id = AgentState.ACTIVE, ""
                await self._bind(held)
                log.info("handoff of %s rolled back: active on %s again", held.agent, self.me)
                return
            rec = await self.mesh.agents.get(held.agent)
        if rec is not None and rec.owner != self.me:
            self._stand_by(held.agent, rec.owner)

    def _stand_by(self, agent: str, owner: str) -> None:
        self.held.pop(agent, None)
        self._taken.discard(agent)
        self.standby[agent] = owner
        log.info("agent %s on standby here: %s owns it now", agent, owner)

    async def _abort(self, agent: str, c: dict[str, Any]) -> dict[str, Any]:
        if self._offered(agent, c.get("id")):
            del self._reserved[agent]
        held = self.held.get(agent)
        if held is not None and held.handoff_id == c.get("id") and held.state is AgentState.HANDING_OFF:
            await self._roll_back(held)
        return {"aborted": True}

    async def _commit(self, agent: str, c: dict[str, Any]) -> dict[str, Any]:
        if not self._offered(agent, c.get("id")):
            raise HandoffError(refusal("no accepted offer for this handoff (expired or aborted)"), agent, "commit")
        ctx = await self._fetch(agent, c)
        said = await (self._loader or self._files().load)(ctx)
        pause_at("loaded")
        rec = await self.mesh.agents.get(agent)
        if rec is None or rec.revision != c.get("revision") or rec.state is not AgentState.HANDING_OFF:
            self._reserved.pop(agent, None)
            raise HandoffError(f"not committed: {agent!r}'s record moved on (rolled back or orphaned)", agent, "commit")
        assert self._node is not None
        caps = tuple(sorted({*self._node.options.capabilities, *self._node.registry.tasks}))
        new = await move_record(self.mesh, rec, AgentRecord(agent, self.me, AgentState.ACTIVE, rec.epoch + 1, caps))
        self._reserved.pop(agent, None)
        if new is None:
            raise HandoffError(f"not committed: lost the compare-and-set of {agent!r}'s record", agent, "commit")
        log.info("handoff of %s committed: owner %s, epoch %d", agent, self.me, new.epoch)
        held = self._hold_new(agent, new.epoch)
        self._taken.add(agent)
        pause_at("committed")
        drained = await self._drain(await self._bind(held))
        ready = f"I'm ready. {said or f'Continuing from {ctx.from_node} (epoch {rec.epoch}).'}"
        await self.publish_as(agent, "SYNC", {"kind": KIND["ready"], "agent": agent, "epoch": new.epoch,
                                              "from": ctx.from_node, "text": ready}, target_agent=agent)
        return {"epoch": new.epoch, "ready": ready, "drained": drained}

    async def _fetch(self, agent: str, c: dict[str, Any]) -> HandoffContext:
        bundle = c.get("bundle") or {}
        where = Path(self._files().dir(agent)).with_suffix(".bundle")
        where.parent.mkdir(parents=True, exist_ok=True)
        info = await self.mesh.files.get(str(bundle["name"]), where)  # SHA-256 checked (FileCorrupt)
        return HandoffContext(agent, str(c.get("from", "")), int(c.get("epoch", 0)), where, info.size, info.digest)

    async def _release(self, agent: str, c: dict[str, Any]) -> dict[str, Any]:
        pause_at("release")
        held = self.held.get(agent)
        if held is not None and held.handoff_id == c.get("id"):
            self._stand_by(agent, str(c.get("to", "?")))
        return {"standby": agent in self.standby}
