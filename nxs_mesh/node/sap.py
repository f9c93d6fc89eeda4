"""The Synadia front door: a node's agents as Synadia-protocol agents (``nxs node run --sap``).

    node = Node(config, NodeOptions(agents=("echo",)))

    @node.command("prompt")                  # what a protocol prompt runs: args = {"prompt": text, ...}
    async def prompt(args, ctx):
        await sap_send(ctx, "thinking... ")  # a response chunk now (no-op for a plain COMMAND)
        return f"you said {args['prompt']}"  # the last chunk; also the RESULT of the COMMAND

    SapFrontDoor.attach(node)                # after the prompt command, before node.start()

Each agent of the node is registered with ``synadia-ai-agent-service`` (see ``client.sap_host``): the
unmodified ``synadia-ai-agents`` client discovers it and prompts it. A prompt does not run in the
SDK's request handler. It is written into the mesh as a COMMAND ``prompt`` to this node and agent,
carrying the caller's reply subject (``metadata.sap_reply``) and a RESULT subject, and the node's own
command consumer runs it. So behind the front door a prompt is what any COMMAND is: durable
(JetStream), deduplicated (``message_id`` -> ``Nats-Msg-Id`` and the consumer's exactly-once record),
ordered by priority, refused by the node's command policy, dropped once its ttl is over.

Who answers the caller: what stays subscribed while the node restarts is the caller itself (its reply
inbox; the protocol's client waits out a silent stream for 60 s by default, reset by every chunk).
The prompt's record in JetStream keeps that inbox's name. While the front door that took a prompt is
alive (this process), the SDK's request ends the stream; if the node dies (``kill -9``) with the
prompt unacknowledged, JetStream redelivers it after its ack wait to the next incarnation, which has
no request object and writes the whole stream itself on the same connection it serves from: a
leading ack, keep-alives, the chunks and the terminator. A handler that had streamed part of its
answer before the crash runs again from the start (the mesh's at-least-once for side effects; the
exactly-once record keeps a *completed* prompt from running twice).

A prompt's extra envelope fields (§5.6) steer it: ``message_id`` (the dedup key: a second prompt
with it runs nothing and is answered with the first one's RESULT), ``priority`` (0..9) and ``ttl``
(seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from nxs_mesh.client.sap import open_sdk_connection, sdk
from nxs_mesh.client.sap_host import ReplyWriter, host_agent, reply_subject, sap_name
from nxs_mesh.node.handlers import Context, HandlerFn, Registry, call_handler
from nxs_mesh.node.parts import NodeHost, NodePart
from nxs_mesh.node.sap_prompts import PromptFields, ResultWatch, final_failure, replay_text
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import new_envelope
from nxs_mesh.wire.errors import ConfigError, MeshError, Retry

__all__ = ["PROMPT_COMMAND", "SapFrontDoor", "sap_send"]

log = logging.getLogger("nxs_mesh.node.sap")

PROMPT_COMMAND = "prompt"
_WRITER = "sap"  # Context.extra key of the prompt's ReplyWriter


async def sap_send(ctx: Context, text: str) -> None:
    """Stream ``text`` to the protocol caller now; a no-op when the command did not come through the door."""
    writer = ctx.extra.get(_WRITER)
    if isinstance(writer, ReplyWriter):
        await writer.send(text)


class _Attachable(Protocol):
    registry: Registry
    parts: list[NodePart]


@dataclass
class _Live:
    """A prompt whose SDK request is open in this process: its handler waits for ``done``."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    running: bool = False  # its executor has started (a stop waits for these only)
    # The SDK's task serving the request (it sends the terminator after our handler returns).
    request: asyncio.Task[Any] | None = field(default_factory=asyncio.current_task)


class SapFrontDoor:
    """A NodePart: registers the node's agents (or its ``agent_id``) as protocol agents."""

    name = "sap"

    def __init__(self, *, owner: str = "nxs", session: str = "default", heartbeat_interval: int = 30,
                 keepalive: float = 30.0) -> None:
        self.owner, self.session, self.heartbeat_interval, self.keepalive = owner, session, heartbeat_interval, keepalive
        self._node: NodeHost | None = None
        self._nc: Any = None
        self._services: list[Any] = []
        self._live: dict[str, _Live] = {}  # correlation id -> the open request's wait
        self._stopping = False
        self._attached = False
        self._ready = asyncio.Event()  # the door is open: prompts from the mesh can be answered
        self.handled = 0

    def __repr__(self) -> str:
        agents = ", ".join(self.agents) if self._node is not None else "-"
        return f"<SapFrontDoor [{agents}] {len(self._live)} open, {self.handled} handled>"

    @property
    def agents(self) -> tuple[str, ...]:
        assert self._node is not None
        return self._node.options.agents or (self._node.config.agent_id,)

    # -- attaching ------------------------------------------------------------------------------------
    @classmethod
    def attach(cls, node: _Attachable, **options: Any) -> SapFrontDoor:
        """Put a front door on ``node`` (before it starts, after its ``prompt`` command is registered).

        The ``prompt`` command is wrapped now, not when the part starts: the node's command consumer
        starts first and may at once be handed a prompt an earlier incarnation took; the wrapper holds
        such a prompt until the door is open, instead of letting it run with nobody to answer."""
        inner = node.registry.commands.get(PROMPT_COMMAND)
        if inner is None:
            raise ConfigError("sap", f"--sap needs a {PROMPT_COMMAND!r} command handler: what a prompt runs "
                              "(register one with @node.command('prompt') or --handlers module:registry)")
        door = cls(**options)
        node.registry.commands[PROMPT_COMMAND] = door._executor(inner)
        node.parts.append(door)
        return door

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self, node: NodeHost) -> None:
        if not self._attached:
            raise ConfigError("sap", "a SapFrontDoor goes on a node with SapFrontDoor.attach(node), "
                              "not node.parts.append (it must wrap the node's prompt command first)")
        sdk("agent_service")  # a clear ConfigError now when the SDKs are missing
        self._node = node
        names = [sap_name(a) for a in self.agents]
        clash = sorted({a for a, n in zip(self.agents, names, strict=True) if names.count(n) > 1})
        if clash:
            raise ConfigError("sap", f"agents {', '.join(clash)} would share one protocol name "
                              f"({sap_name(clash[0])}): rename one")
        self._nc = await open_sdk_connection(node.config, "door")
        try:
            for agent in self.agents:
                self._services.append(await host_agent(
                    self._nc, agent_id=agent, owner=self.owner, session=self.session,
                    description=f"nxs-mesh agent {agent} on {node.node_id}", on_prompt=self._door(agent),
                    heartbeat_interval=self.heartbeat_interval, metadata={"nxs_node": node.node_id}))
        except BaseException:
            await self._close()
            raise
        self._ready.set()
        log.info("sap: %s serve the Synadia Agent Protocol", ", ".join(self.agents))

    async def stop(self, grace: float) -> None:
        """Prompts whose handler is running end within ``grace``; the others stay in the mesh for the next
        incarnation (one that would start meanwhile is handed back: ``Retry``). The connection closes
        before their SDK requests are cancelled, so no terminator ends their callers' streams."""
        self._stopping = True
        # The SDK's request tasks, not our waits: each ends after its terminator went out.
        running = [live.request for live in self._live.values() if live.running and live.request is not None]
        if running:
            await asyncio.wait(running, timeout=grace)
        await self._close()

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()
        left = [live.request for live in self._live.values() if live.request is not None and not live.request.done()]
        for request in left:  # their terminators cannot go out now: the callers wait for the next incarnation
            request.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        services, self._services = self._services, []
        for service in services:
            try:
                await service.stop()
            except Exception as exc:  # its connection is closed already: nothing left to tell anyone
                log.debug("sap: stopping %s: %s", service.subject.prompt, exc)

    # -- the door: an SDK request in, a COMMAND into the mesh ------------------------------------------
    def _door(self, agent: str) -> Any:
        async def on_prompt(envelope: Any, stream: Any) -> None:
            await self._admit(agent, envelope, stream)

        return on_prompt

    async def _admit(self, agent: str, envelope: Any, stream: Any) -> None:
        node = self._node
        assert node is not None and node.mesh is not None
        rejected = sdk("agent_service").RequestRejectedError
        try:
            fields = PromptFields.read(envelope.extras)
        except ValueError as exc:
            raise rejected(400, str(exc)) from None
        reply = reply_subject(stream)
        corr = str(uuid.uuid5(uuid.NAMESPACE_URL, f"nxs-sap:{node.node_id}:{agent}:{fields.message_id or reply}"))
        env = new_envelope(
            "COMMAND", {"command": PROMPT_COMMAND, "args": fields.args(envelope)}, source=node.mesh.source,
            to=node.node_id, agent=agent, priority=fields.priority, ttl=fields.ttl, correlation_id=corr,
            reply_to=subjects.result(corr), message_id=corr, metadata={"sap_reply": reply},
        )
        first = corr not in self._live
        live = self._live.setdefault(corr, _Live())
        try:
            if not first:  # the same prompt again while it runs here
                await self._replay(corr, stream, fields.ttl, same_caller=fields.message_id is None)
                return
            watch = await ResultWatch.open(node.mesh, corr)
            try:
                ack = await node.mesh.send(env)
                if ack.duplicate:
                    await self._replay(corr, stream, fields.ttl, same_caller=fields.message_id is None)
                    return
                await self._wait_end(live, watch, fields.ttl)
            finally:
                await watch.close()
        except MeshError as exc:
            raise rejected(503, f"the mesh did not take the prompt: {exc}") from None
        finally:
            if first:
                self._live.pop(corr, None)

    async def _wait_end(self, live: _Live, watch: ResultWatch, ttl: int) -> None:
        """Until the executor has answered (or the prompt's RESULT says it failed without it)."""
        rejected = sdk("agent_service").RequestRejectedError
        done = asyncio.ensure_future(live.done.wait())
        try:
            finished, _ = await asyncio.wait((done, watch.outcome), timeout=ttl or None,
                                             return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
        if not finished:
            raise rejected(504, f"no answer within the prompt's ttl ({ttl} s)")
        error = live.error if live.done.is_set() else watch.outcome.result()[1]
        if error is not None:
            raise rejected(403 if error.startswith("not authorized") else 500, error)

    async def _replay(self, corr: str, stream: Any, ttl: int, *, same_caller: bool) -> None:
        """A duplicate: nothing runs again; it is answered with the first prompt's RESULT (and, when it is
        the very same request again, on the same reply subject, only after that one's stream ended)."""
        node = self._node
        assert node is not None and node.mesh is not None
        try:
            async with asyncio.timeout(ttl or None):
                text, error = await replay_text(node.mesh, corr)
        except TimeoutError:
            raise sdk("agent_service").RequestRejectedError(504, "the first of these prompts got no answer") from None
        if error is not None:
            raise sdk("agent_service").RequestRejectedError(500, error)
        if not same_caller and text:
            await stream.send(text)

    # -- the executor: the COMMAND's handler, on the node's command consumer ---------------------------
    def _executor(self, inner: HandlerFn) -> HandlerFn:
        self._attached = True

        async def run_prompt(args: Any, ctx: Context) -> Any:
            reply = ctx.envelope.payload.metadata.get("sap_reply")
            if not isinstance(reply, str):
                return await call_handler(inner, args, ctx)  # a plain COMMAND `prompt`
            if not self._ready.is_set():
                await ctx.in_progress()  # the door opens within the node's start (or the start fails)
                await self._ready.wait()
            return await self._execute(inner, args, ctx, reply)

        return run_prompt

    async def _execute(self, inner: HandlerFn, args: Any, ctx: Context, reply: str) -> Any:
        if self._stopping or self._nc is None:  # the node drains its window: this one is for the next start
            raise Retry(1.0, "the Synadia front door is closing; the next start answers this prompt")
        corr = ctx.envelope.correlation_id
        live = self._live.get(corr) if isinstance(corr, str) else None
        writer = ReplyWriter(self._nc, reply, owns_stream=live is None, keepalive=self.keepalive)
        if live is not None:
            live.running = True
        ctx.extra[_WRITER] = writer
        try:
            async with writer.opened():
                result = await call_handler(inner, args, ctx)
            if result is not None:
                await writer.send(result if isinstance(result, str) else _json_text(result))
        except Exception as exc:
            reason = final_failure(exc, ctx)
            if reason is not None:  # no delivery will follow: tell the caller now
                if live is not None:
                    live.error = reason
                    live.done.set()
                await writer.fail(500, reason)
            raise
        self.handled += 1
        await writer.end()
        if live is not None:
            live.done.set()
        return writer.text


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
