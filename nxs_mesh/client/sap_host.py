"""Hosting a Synadia-protocol agent with ``synadia-ai-agent-service``, and writing a reply stream by hand.

``host_agent`` registers one ``AgentService`` (discovery under ``$SRV.INFO.agents``, heartbeats on
``agents.hb.…``, the ``status`` endpoint, the sender gate, the leading ack and keep-alives, the stream's
terminator): everything the package does well is left to it. What it cannot do is answer a prompt
after the process that took it is gone: its ``PromptStream`` lives and dies with the request object.
``ReplyWriter`` is that missing piece: the protocol's chunks (``encode_chunk``), §9 error frames and the
§6.5 terminator, published to a reply subject given by name, so a later incarnation of the node can
finish a stream an earlier one acknowledged.

Both sides of one stream publish on one connection (the front door's), so their frames stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nxs_mesh.client.sap import sdk

__all__ = ["ReplyWriter", "host_agent", "reply_subject", "sap_name"]

_NOT_AGENT_TOKEN = re.compile(r"[^a-z0-9-]+")

PromptHandler = Callable[[Any, Any], Awaitable[None]]


def sap_name(agent_id: str) -> str:
    """The protocol's agent token for a mesh agent id (lowercase letters, digits and hyphens, §2):
    ``agent:main:Main`` -> ``agent-main-main``. The mesh id itself is registered as metadata ``nxs_agent``."""
    return _NOT_AGENT_TOKEN.sub("-", agent_id.lower()).strip("-") or "agent"


def reply_subject(stream: Any) -> str:
    """The caller's reply subject of the prompt behind an SDK ``PromptStream``.

    The SDK does not expose it (it answers through the request object); the front door must carry it
    into the mesh so that another incarnation can answer. Read from the one private attribute path
    this module relies on (``PromptStream._request`` -> nats-py micro ``Request._msg.reply``), pinned by
    ``tests/test_sap_front.py::test_the_private_sdk_attributes_we_read_still_exist``."""
    reply = getattr(getattr(getattr(stream, "_request", None), "_msg", None), "reply", None)
    if not isinstance(reply, str) or not reply:
        raise sdk().ProtocolError("the prompt has no reply subject: nobody could read an answer")
    return reply


async def host_agent(
    nc: Any, *, agent_id: str, owner: str, session: str, description: str, on_prompt: PromptHandler,
    heartbeat_interval: int = 30, concurrency: int = 64, metadata: dict[str, str] | None = None,
) -> Any:
    """Start an ``AgentService`` for mesh agent ``agent_id`` on ``nc``; returns it (``await svc.stop()``).

    ``concurrency``: prompts taken at once; well above 1, so they all reach the mesh, whose priority
    order (not their arrival order) then decides which runs first."""
    service_mod = sdk("agent_service")
    service = service_mod.AgentService(
        agent=sap_name(agent_id), owner=owner, session_name=session, nc=nc, description=description,
        heartbeat_interval_s=heartbeat_interval, max_concurrent_prompts=concurrency,
        extra_metadata={"nxs_agent": agent_id, **(metadata or {})},
    )
    service.on_prompt(on_prompt)
    await service.start()
    return service


class ReplyWriter:
    """The protocol's frames on a reply subject, published on the front door's connection.

    ``owns_stream``: this writer opens (leading ack) and ends (terminator, or error frame and
    terminator) the stream; otherwise a live ``AgentService`` request does both and only the response
    chunks come from here."""

    def __init__(self, nc: Any, subject: str, *, owns_stream: bool, keepalive: float = 30.0) -> None:
        self._nc, self.subject, self.owns_stream, self._keepalive = nc, subject, owns_stream, keepalive
        self.parts: list[str] = []

    def __repr__(self) -> str:
        return f"<ReplyWriter {self.subject} {'owns' if self.owns_stream else 'relays'} [{len(self.parts)} chunks]>"

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def _chunk(self, chunk: Any) -> None:
        await self._nc.publish(self.subject, sdk("agents.messages").encode_chunk(chunk))

    async def send(self, text: str) -> None:
        """One response chunk (§6.3)."""
        self.parts.append(text)
        await self._chunk(sdk().ResponseChunk(text=text))

    async def status(self, token: str = "ack") -> None:
        await self._chunk(sdk().StatusChunk(status=token))

    async def fail(self, code: int, description: str) -> None:
        """A §9 error frame, then the terminator (only when this writer owns the stream)."""
        if self.owns_stream:
            flat = " ".join(description.split())[:200]
            await self._nc.publish(self.subject, b"", headers={"Nats-Service-Error-Code": str(code),
                                                               "Nats-Service-Error": flat})
            await self.end()

    async def end(self) -> None:
        """The §6.5 terminator: an empty body with no headers (only when this writer owns the stream)."""
        if self.owns_stream:
            await self._nc.publish(self.subject, b"")
            await self._nc.flush()

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[ReplyWriter]:
        """While the handler runs: the leading ack and a keep-alive every ``keepalive`` seconds, as
        ``AgentService`` sends them, when this writer owns the stream."""
        if not self.owns_stream:
            yield self
            return
        await self.status("ack")
        # Owned here: cancelled and awaited on the way out (a TaskGroup would wrap the handler's own
        # exception, which decides the ack, in an ExceptionGroup).
        beat = asyncio.create_task(self._beat(), name=f"sap-keepalive {self.subject}")
        try:
            yield self
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive)  # sleep-ok: the protocol's keep-alive cadence
            with contextlib.suppress(Exception):  # best effort, as the SDK's own keep-alive
                await self.status("ack")
