"""Handoff of an agent from its owner to another node (issue 11 part 2), the caller's side: ``mesh.handoff``.

    outcome = await mesh.handoff("agent:research", to="nxs-node-002", context={"history": [...]})
    outcome.epoch, outcome.ready, outcome.steps     # 2, "I'm ready. Continuing from ...", {"offer": 0.004, ...}

The caller drives; the owner (A) and the target (B) each run a ``node.handoff.HandoffService``. Every
step is a SYNC message to ``nxs.sync.<node>.<agent>`` answered by a RESULT (the mesh's one reply path:
correlated, signature-checked in secure mode), and has a timeout:

1. ``offer`` -> B: {agent, epoch, size, needs, version}; B accepts, or refuses with why (capacity,
   capability, version): nothing has changed.
2. ``prepare`` -> A: A stops taking the agent's messages (its in-flight ones finish), moves the
   record to ``handing-off`` (compare-and-set), and stores the context bundle in NXS_FILES (its
   provider's, unless the caller gave ``context``, uploaded first) -> {revision, bundle}.
3. ``commit`` -> B: B reads the bundle (SHA-256 checked), loads it, then compare-and-sets the
   record from that ``handing-off`` revision to {owner B, active, epoch + 1}. It binds the agent's
   durable consumer, handles what arrived meanwhile (in order, once), and announces "ready".
4. ``release`` -> A: standby.

Why the caller drives, and not A: a handoff is asked for by a user (the CLI, a program) and must end
even when A is the node that is failing; the one truth about whether the commit happened is the
registry record, which the caller reads after a timeout instead of trusting a peer's memory. Before
the commit a timeout aborts (A puts its record back to ``active`` and resumes; A also does so by
itself when nobody comes back within ``hold``); after it, B owns the agent whatever else fails. Both
the abort and the commit are compare-and-sets of the same revision, so exactly one of them wins.

Messages to the agent follow it without re-publishing: whichever node owns it consumes one durable
consumer on NXS_CHAT filtered on ``nxs.chat.*.<agent>``; A stops fetching before the commit, B binds
after it, and the durable holds what arrived in between, in order.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from nxs_mesh.client.agents import AgentRecord, AgentState
from nxs_mesh.client.consumer import durable_name
from nxs_mesh.client.publishing import PublishResult
from nxs_mesh.transport.objects import Progress
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, check_id
from nxs_mesh.wire.errors import (
    AgentNotFound,
    HandoffError,
    HandoffRefused,
    HandoffTimeout,
    MeshError,
    MeshTimeout,
    RemoteError,
)

if TYPE_CHECKING:
    from nxs_mesh.client.agents import AgentDirectory
    from nxs_mesh.client.files import MeshFiles

__all__ = ["KIND", "STEPS", "VERSION", "HandoffOutcome", "Handoffs", "agent_durable", "agent_filter", "bundle_name",
           "context_source", "refusal", "sync_durable"]

#: The protocol version an offer carries; a target refuses another one.
VERSION: Final = 1
#: ``content.kind`` of each message of the protocol (``handoff-offer``, ...), and the "ready" broadcast.
KIND: Final = {step: f"handoff-{step}" for step in ("offer", "prepare", "commit", "release", "abort", "ready")}
STEPS: Final = ("offer", "upload", "prepare", "commit", "release")
_REFUSED: Final = "refused: "

Context = bytes | str | Path | dict[str, Any] | list[Any]


def sync_durable(node: str) -> str:
    """The durable consumer on NXS_SYNC through which ``node``'s handoff service hears the protocol."""
    return durable_name("handoff", node)


def agent_durable(agent: str) -> str:
    """The durable consumer on NXS_CHAT holding ``agent``'s messages; whichever node owns it consumes it."""
    return durable_name("agent", agent)


def agent_filter(agent: str) -> str:
    """Every message to ``agent``, whichever instance the sender addressed (so they follow a handoff)."""
    return f"{subjects.ROOT}.chat.*.{check_id(agent, 'agent')}"


def bundle_name(agent: str, handoff_id: str) -> str:
    """The NXS_FILES object holding one handoff's context bundle."""
    return f"handoff/{check_id(agent, 'agent')}/{handoff_id}"


def refusal(why: str) -> str:
    """The error text of a RESULT refusing a step (the caller raises ``HandoffRefused`` on it)."""
    return _REFUSED + why


@dataclass(frozen=True)
class HandoffOutcome:
    """What ``mesh.handoff`` did: the new owner and epoch, B's "ready" line, seconds per step."""

    agent: str
    from_node: str
    to_node: str
    epoch: int
    ready: str
    drained: int  # messages that arrived during the handoff, handled by the new owner before "ready"
    released: bool  # the old owner confirmed standby (False: it did not answer; it stays fenced)
    bundle: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.steps.values())

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "from": self.from_node, "to": self.to_node, "epoch": self.epoch,
                "ready": self.ready, "drained": self.drained, "released": self.released, "bundle": self.bundle,
                "steps": {k: round(v, 4) for k, v in self.steps.items()}, "seconds": round(self.seconds, 4)}


def context_source(context: Context) -> bytes | Path:
    if isinstance(context, bytes | Path):
        return context
    if isinstance(context, str):
        return context.encode()
    return json.dumps(context, separators=(",", ":")).encode()


class Handoffs:
    """``handoff``: mixed into ``Mesh``; needs its agents, files, call and source."""

    if TYPE_CHECKING:
        call: Callable[..., Awaitable[tuple[PublishResult, Envelope]]]

        @property
        def agents(self) -> AgentDirectory: ...

        @property
        def files(self) -> MeshFiles: ...

    async def handoff(
        self, agent: str, *, to: str, context: Context | None = None, needs: tuple[str, ...] = (),
        timeout: float = 30.0, hold: float | None = None, progress: Progress | None = None,
        on_step: Callable[[str], None] | None = None, keep_bundle: bool = False,
    ) -> HandoffOutcome:
        """Move ``agent`` from its owner to node ``to`` (see the module docstring); returns once the new
        owner announced "ready". ``context``: the bundle to hand over (bytes, text, a file, or a JSON
        value); None: the owner's context provider packages it. ``needs``: capabilities ``to`` must have.
        ``timeout``: per step; ``hold``: how long the owner waits for the commit before it rolls back
        by itself (default 3 x ``timeout``). ``on_step(name)`` is called as each step starts. The bundle
        is deleted from NXS_FILES once committed, unless ``keep_bundle``.

        Raises ``HandoffRefused`` (nothing changed), ``HandoffTimeout`` (rolled back to the owner, or
        the owner is gone: the Doctor then orphans the agent), ``HandoffError``, ``AgentNotFound``."""
        rec = await self._handable(agent, to)
        hid = uuid.uuid4().hex[:16]
        base = {"agent": agent, "id": hid, "epoch": rec.epoch, "from": rec.owner, "to": to}
        steps: dict[str, float] = {}
        step = _Stepper(self, agent, timeout, steps, on_step)
        source = None if context is None else context_source(context)
        size = (source.stat().st_size if isinstance(source, Path) else len(source)) if source is not None else None
        hold = hold or 3 * timeout
        offer = await step("offer", to, {**base, "size": size, "needs": list(needs), "version": VERSION, "hold": hold})
        if not offer.get("accept"):
            raise HandoffRefused(f"{to} refused agent {agent!r}: {offer.get('why', '?')}", agent, "offer")
        try:
            bundle = None
            if source is not None:
                step.begin("upload")
                info = await self.files.put(source, name=bundle_name(agent, hid), progress=progress)
                bundle = {"name": info.name, "size": info.size, "digest": info.digest}
                step.end("upload")
            prep = await step("prepare", rec.owner, {**base, "bundle": bundle, "hold": hold})
        except MeshError:
            await step.tell("abort", to, base)  # B drops its reservation; A rolls back (or the Doctor orphans)
            await step.tell("abort", rec.owner, base)
            raise
        done = await self._committed(step, rec, base, prep)
        released = True
        try:
            await step("release", rec.owner, {**base, "epoch": done["epoch"]})
        except HandoffError:
            released = False  # A is gone or mute: B owns the agent; A's stale epoch is fenced
        if not keep_bundle:
            try:
                await self.files.delete(str(prep["bundle"]["name"]))
            except MeshError:
                pass  # loaded by B already; a leftover bundle is only storage
        return HandoffOutcome(agent, rec.owner, to, int(done["epoch"]), str(done.get("ready", "")),
                              int(done.get("drained", 0)), released, dict(prep["bundle"]), steps)

    async def _handable(self, agent: str, to: str) -> AgentRecord:
        """The agent's record, when it can be handed to ``to`` now; the error saying why not otherwise."""
        check_id(to, "to")
        rec = await self.agents.get(agent)
        if rec is None:
            raise AgentNotFound(f"agent {agent!r} is not registered (see `nxs agents`)", agent)
        if rec.state is not AgentState.ACTIVE:
            raise HandoffError(f"agent {agent!r} is {rec.state} on {rec.owner}: only an active agent is handed "
                               "off", agent, "offer")
        if rec.owner == to:
            raise HandoffError(f"agent {agent!r} already lives on {to}", agent, "offer")
        return rec

    async def _committed(self, step: _Stepper, rec: AgentRecord, base: dict[str, Any],
                         prep: dict[str, Any]) -> dict[str, Any]:
        """B's commit; after a failure the registry says whether it happened (else: abort, back to A)."""
        to = str(base["to"])
        try:
            return await step("commit", to, {**base, "revision": prep["revision"], "bundle": prep["bundle"]})
        except HandoffError:
            now = await self.agents.get(rec.agent)
            if now is None or now.owner != to or now.epoch != rec.epoch + 1:
                await step.tell("abort", rec.owner, base)  # not committed: back to A
                raise
            return {"epoch": now.epoch, "ready": "", "drained": 0}  # committed; B's answer was lost


class _Stepper:
    """Runs one step: a SYNC call with its timeout, timed; maps the answer to the handoff errors."""

    def __init__(self, mesh: Handoffs, agent: str, timeout: float, steps: dict[str, float],
                 on_step: Callable[[str], None] | None) -> None:
        self._mesh, self._agent, self._timeout, self._steps, self._on_step = mesh, agent, timeout, steps, on_step
        self._t0 = 0.0

    def begin(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)
        self._t0 = time.monotonic()

    def end(self, name: str) -> None:
        self._steps[name] = time.monotonic() - self._t0

    async def __call__(self, name: str, node: str, content: dict[str, Any]) -> dict[str, Any]:
        self.begin(name)
        try:
            _, env = await self._mesh.call(
                "SYNC", {**content, "kind": KIND[name]}, correlation_id=str(uuid.uuid4()), timeout=self._timeout,
                waiting_for=f"{node}'s answer to handoff {name}", to=node, agent=self._agent,
                ttl=max(1, int(self._timeout + 0.999)))
        except MeshTimeout as exc:
            raise HandoffTimeout(f"handoff of {self._agent!r}: {exc}; rolled back to the last committed owner",
                                 self._agent, name) from None
        except RemoteError as exc:
            text = str(exc)
            cls = HandoffRefused if _REFUSED in text else HandoffError
            raise cls(f"handoff of {self._agent!r} at {name}: {text}", self._agent, name) from None
        self.end(name)
        answer = env.content
        if not isinstance(answer, dict):
            raise HandoffError(f"handoff {name}: {node} answered {answer!r}, not an object", self._agent, name)
        return answer

    async def tell(self, name: str, node: str, content: dict[str, Any]) -> None:
        """A message no one waits on (an abort): best effort, its failure only logged by the publish."""
        try:
            await self._mesh.call("SYNC", {**content, "kind": KIND[name]}, correlation_id=str(uuid.uuid4()),
                                  timeout=min(2.0, self._timeout), waiting_for=f"{node}'s answer to handoff {name}",
                                  to=node, agent=self._agent, ttl=max(1, int(3 * self._timeout)))
        except MeshError:
            pass  # a dead node reads it from its durable when it comes back (ignored then: nothing in progress)
