"""The client agents embed: publish, consume, tail, request/reply, and what the layers above need of
the mesh (plain subscriptions for presence, immediate publishes for heartbeats, stream reports,
buckets). It is the boundary: nothing above it sees nats-py.

    async with Mesh(MeshConfig(servers=("nats://127.0.0.1:4222",), instance_id="nxs-node-001")) as mesh:
        ack = await mesh.publish("CHAT", "hello", to="nxs-node-002")
        async for rec in mesh.tail("chat", last=5):
            print(rec.envelope)
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from nxs_mesh.client.admin import MeshAdmin
from nxs_mesh.client.agents import AgentDirectory
from nxs_mesh.client.consumer import Consumer, ConsumerSpec, Handler, durable_name, lane_prefixes
from nxs_mesh.client.exactly_once import open_guard
from nxs_mesh.client.files import MeshFiles
from nxs_mesh.client.handoff import Handoffs
from nxs_mesh.client.outbox import Outbox, OutboxFlusher
from nxs_mesh.client.publishing import PublishPath, PublishResult, encode_checked
from nxs_mesh.client.requests import Requests
from nxs_mesh.client.sap import SapAccess
from nxs_mesh.client.security import MessageSecurity, outgoing_headers, screen_record
from nxs_mesh.client.tasks import Tasks
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport import admin
from nxs_mesh.transport.connection import ReconnectPolicy, server_path
from nxs_mesh.transport.link import Inbound, Link, ServerInfo
from nxs_mesh.transport.publisher import JsPublisher
from nxs_mesh.transport.reader import Record, peek_workqueue, read_stream
from nxs_mesh.transport.streams import EnsureResult, ensure_streams, stream_for_kind
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import DEFAULT_PRIORITY, DEFAULT_TTL
from nxs_mesh.wire.envelope import Envelope, Source, check_id, new_envelope
from nxs_mesh.wire.errors import ClosedError, NotConnectedError, PermissionDenied

__all__ = ["Mesh", "MeshState", "PublishResult", "Record"]

log = logging.getLogger("nxs_mesh.client.mesh")


class MeshState(enum.StrEnum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Mesh(Requests, Tasks, Handoffs, SapAccess):
    """An open connection to the mesh for one agent (``instance_id``/``agent_id``)."""

    def __init__(
        self,
        config: MeshConfig | None = None,
        *,
        ensure: bool = True,
        outbox: Outbox | str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> None:
        """``outbox``: an ``Outbox`` or a path for one; with it, a publish that finds no JetStream quorum
        is queued on disk (``PublishResult.queued``) and sent later (see ``nxs_mesh.client.outbox``)."""
        cfg = config or MeshConfig()
        self.config = cfg.replace(**overrides) if overrides else cfg
        self.source = Source(self.config.instance_id, self.config.agent_id, self.config.location)
        self._ensure = ensure
        self._link: Link | None = None
        self._path: PublishPath | None = None
        self._consumers: list[Consumer] = []
        self.state = MeshState.UNOPENED
        self.publish_timeout = 5.0
        self._own_outbox = outbox is not None and not isinstance(outbox, Outbox)
        self.outbox: Outbox | None = Outbox(outbox) if not isinstance(outbox, Outbox | None) else outbox
        self._policy = ReconnectPolicy()
        #: Signing, verification and seal keys (``client.security``), from the config's key files.
        self.security = MessageSecurity.from_config(self.config)
        #: A capability token (``wire.grants``) sent with every COMMAND and TASK, when set.
        self.grant: str | None = self.config.grant

    def __repr__(self) -> str:
        link = self._link
        server = (link.connected_netloc if link is not None else None) or "-"
        queued = f", {len(self.outbox)} outbox" if self.outbox is not None and self.state is MeshState.OPEN else ""
        return (f"<Mesh {self.config.instance_id}/{self.config.agent_id} {self.state.name} "
                f"[server {server}, {len(self._consumers)} consumers{queued}]>")

    # -- lifecycle ---------------------------------------------------------------------------------
    async def connect(self) -> Mesh:
        if self.state is MeshState.CLOSED:
            raise ClosedError("this Mesh was closed; create a new one")
        if self.state is MeshState.OPEN:
            return self
        self._link = await Link.open(self.config, policy=self._policy, on_reconnected=self._on_reconnected)
        self._path = PublishPath(self._link, self.outbox, self.publish_timeout, self.security)
        self.state = MeshState.OPEN
        if self._path.flusher is not None:
            self._path.flusher.start()
        if self._ensure:
            try:
                await self._ensure_on_connect()
            except BaseException:
                await self.close()
                raise
        return self

    async def close(self) -> None:
        """Stop consumers (drain their in-flight work), then drain and close the connection."""
        if self.state is MeshState.CLOSED:
            return
        self.state = MeshState.CLOSED
        consumers, self._consumers = self._consumers, []
        for c in consumers:
            await c.stop()
        if self._path is not None and self._path.flusher is not None:
            await self._path.flusher.stop()  # what is still queued stays on disk for the next start
        if self._own_outbox and self.outbox is not None:
            self.outbox.close()
        link, self._link = self._link, None
        if link is not None:
            await link.close()  # publishes still waiting for an ack fail with ClosedError

    async def __aenter__(self) -> Mesh:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def link(self) -> Link:
        """The transport connection (for ``transport`` helpers; layers above use the methods here)."""
        if self._link is None or self.state is not MeshState.OPEN:
            if self.state is MeshState.CLOSED:
                raise ClosedError("this Mesh is closed")
            raise NotConnectedError("not connected: use `async with Mesh(...)` or `await mesh.connect()`")
        return self._link

    @property
    def pub(self) -> JsPublisher:
        """The lean JetStream publisher of the current connection."""
        return self.link.publisher

    @property
    def flusher(self) -> OutboxFlusher | None:
        return self._path.flusher if self._path is not None else None

    @property
    def admin(self) -> MeshAdmin:
        """Stream, consumer and bucket management (reports, purge, stored messages)."""
        return MeshAdmin(self.link, self.config)

    @functools.cached_property
    def files(self) -> MeshFiles:
        """Files in the Object Store (bucket NXS_FILES), streamed: put/get/stream/list/info/delete."""
        return MeshFiles(self)

    @functools.cached_property
    def agents(self) -> AgentDirectory:
        """The agent registry (bucket NXS_AGENTS): get/list/resolve (``client.agents``)."""
        return AgentDirectory(self.admin, security=self.security)

    @property
    def is_connected(self) -> bool:
        return self._link is not None and self._link.is_connected

    @property
    def reopens(self) -> int:
        """How often the connection was closed under us and reopened."""
        return self._link.reopens if self._link is not None else 0

    @property
    def connected_url(self) -> str | None:
        return self._link.connected_url if self._link is not None else None

    @property
    def server_path(self) -> str:
        """"local", "peer", "relay" or "disconnected": which path this client uses now."""
        if not self.is_connected:
            return "disconnected"
        return server_path(self.config.servers, self.connected_url, jetstream=self.server_info().jetstream)

    def server_info(self) -> ServerInfo:
        return self.link.server_info()

    async def _on_reconnected(self) -> None:
        if self._path is not None:
            self._path.reconnected()

    async def ensure_streams(self, replicas: int | None = None) -> list[EnsureResult]:
        """Create/update every mesh stream (idempotent); replicas default to min(3, cluster size)."""
        n = replicas or self.config.replicas or self.cluster_size()
        return await ensure_streams(self.link, replicas=min(3, n))

    async def _ensure_on_connect(self) -> None:
        if self.server_path == "relay":  # the hub looks like a cluster of one: never resize the members' streams
            return
        if not self.config.secure:
            await self.ensure_streams()
            return
        # A secure mesh's streams are admin's (`nxs init`): a node creates none it may not, updates none.
        n = self.config.replicas or self.cluster_size()
        try:
            await ensure_streams(self.link, replicas=min(3, n), update=False)
        except PermissionDenied as exc:
            log.warning("%s: streams are missing and this identity may not create them; run `nxs init` "
                        "with the admin identity (%s)", self.config.instance_id, exc)

    def cluster_size(self) -> int:
        info = self.server_info()
        return max(1, len(info.connect_urls)) if info.cluster else 1

    # -- publish -----------------------------------------------------------------------------------
    async def publish(
        self,
        message_type: str,
        content: Any = "",
        *,
        to: str = "*",
        agent: str = "*",
        priority: int = DEFAULT_PRIORITY,
        ttl: int = DEFAULT_TTL,
        metadata: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        message_id: uuid.UUID | str | None = None,
        capability: str | None = None,
        seal: bool = False,
        to_agent: str | None = None,
    ) -> PublishResult:
        """Build, validate and store one envelope; returns its stream sequence (or that it was a duplicate).
        ``seal``: encrypt the content to the target's key (a broadcast: the mesh key; ``wire.sealing``).
        ``to_agent``: address an agent wherever it lives: its owner comes from the registry (``client.agents``)."""
        if to_agent is not None:
            to, agent = await self.agents.resolve(to_agent), to_agent
        if capability is not None:
            check_id(capability, "capability")
            metadata = {**(metadata or {}), "capability": capability}
        env = new_envelope(
            message_type, content, source=self.source, to=to, agent=agent, priority=priority, ttl=ttl,
            metadata=metadata, correlation_id=correlation_id, reply_to=reply_to, message_id=message_id,
        )
        return await self.send(env, seal=seal)

    async def send(self, env: Envelope, *, subject: str | None = None, msgpack: bool = False,
                   seal: bool = False) -> PublishResult:
        """Store a ready envelope (its ``message_id`` is the dedup key: re-sending it is harmless)."""
        extra = outgoing_headers(env, seal=seal, grant=self.grant)
        if seal:
            env = self.security.seal(env)
        return await self.send_raw(subject or subjects.for_envelope(env), encode_checked(env, msgpack=msgpack), env,
                                   msgpack=msgpack, extra=extra)

    async def send_raw(self, subject: str, data: bytes, env: Envelope, *, msgpack: bool = False,
                       extra: dict[str, str] | None = None) -> PublishResult:
        """Store ready bytes of ``env`` (signed here when the config has a key; ``extra`` headers added)."""
        self.link  # noqa: B018 - raises the right error when not open
        assert self._path is not None
        return await self._path.send_raw(subject, data, env, msgpack=msgpack, extra=extra)

    async def publish_many(self, envelopes: Iterable[Envelope], *, msgpack: bool = False) -> list[PublishResult]:
        """Store ready envelopes pipelined: each goes out without waiting for the previous acknowledgement
        (up to ``JsPublisher.max_in_flight`` = 4096 in flight); returns one ``PublishResult`` per envelope, in order.

            results = await mesh.publish_many(new_envelope("CHAT", i, source=mesh.source) for i in range(1000))

        On an error, envelopes already stored stay stored; re-sending the batch is harmless (each
        ``message_id`` is its dedup key).
        """
        self.link  # noqa: B018 - raises the right error when not open
        assert self._path is not None
        return await self._path.publish_many(envelopes, msgpack=msgpack)

    async def publish_now(self, subject: str, data: bytes) -> None:
        """A plain publish with no stream acknowledgement (heartbeats: a lost one is replaced next interval);
        an envelope is signed like every other."""
        await self.link.publish(subject, data, self.security.sign_raw(subject, data))

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until the server has everything published so far."""
        await self.link.flush(timeout)

    async def subscribe(self, subject: str, callback: Inbound) -> Any:
        """A plain subscription, ``callback(subject, data, headers)`` per message, kept across reconnects
        and reopens; ``await sub.unsubscribe()`` ends it. For live views (presence), not for work."""
        return await self.link.subscribe(subject, callback)

    # -- consume -----------------------------------------------------------------------------------
    async def consume(
        self,
        kind: str,
        handler: Handler,
        *,
        durable: str | None = None,
        instance: str | None = None,
        agent: str | None = None,
        filters: Sequence[str] | None = None,
        batch: int = 32,
        concurrency: int = 1,
        ack_wait: float | None = None,
        max_deliver: int | None = None,
        backoff_base: float = 0.5,
        fetch_timeout: float = 1.0,
        on_change: Any = None,
        window: int = 0,
        lanes: bool = False,
        exactly_once: bool = False,
    ) -> Consumer:
        """Run a durable consumer of ``kind`` (chat, command, sync, task, ...) calling ``handler`` per envelope.

        By default it receives what is addressed to this instance/agent plus broadcasts. The handler's
        outcome decides the ack: return = ack, ``Retry`` = nak with delay, ``Reject`` = dead letter,
        any other exception = retry with backoff until ``max_deliver``, then dead letter.

        ``window``: keep up to that many deliveries in hand and start the most urgent as slots free
        (a backlog runs by priority). ``lanes``: one consumer per priority (task and command subjects),
        for shared work queues. ``exactly_once``: members of the group (the same ``durable``) share a
        record of what was handled, so none handles a message twice (two KV writes per message; see
        ``nxs_mesh.client.exactly_once``).
        """
        spec = stream_for_kind(kind)
        if filters is None:
            if kind.lower() in ("chat", "command", "sync"):
                filters = subjects.filters_for(kind, instance or self.config.instance_id, agent)
            else:
                filters = subjects.filters_for(kind, instance)
        durable = durable or durable_name(kind.lower(), self.config.instance_id, agent or "all")
        check_id(durable.replace("_", "-"), "durable")
        ack_wait = ack_wait or self.config.ack_wait
        once = await open_guard(self.admin, durable, timeout=max(1.0, ack_wait / 2)) if exactly_once else None
        consumer = Consumer(
            self.link,
            ConsumerSpec(
                stream=spec.name, durable=durable, filters=tuple(filters),
                ack_wait=ack_wait, max_deliver=max_deliver or self.config.max_deliver,
                batch=batch, concurrency=concurrency, backoff_base=backoff_base, fetch_timeout=fetch_timeout,
                dlq_instance=self.config.instance_id, window=window,
                lanes=lane_prefixes(kind, filters) if lanes else (),
            ),
            handler, on_change=on_change, once=once, security=self.security,
        )
        await consumer.start()
        # A stopped consumer (e.g. an agent's, after a handoff) is forgotten here, not kept until close.
        self._consumers = [c for c in self._consumers if c.state != "stopped"]  # ConsumerState
        self._consumers.append(consumer)
        return consumer

    # -- read --------------------------------------------------------------------------------------
    def tail(
        self,
        kind: str,
        *,
        instance: str | None = None,
        agent: str | None = None,
        filters: Sequence[str] | None = None,
        seq: int | None = None,
        since: datetime | None = None,
        last: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[Record]:
        """Replay stored messages of ``kind`` in order (from ``seq``, ``since`` or the ``last`` N)."""
        spec = stream_for_kind(kind)
        if filters is None:
            filters = subjects.filters_for(kind, instance, agent) if kind.lower() != "dlq" else list(spec.subjects)
        if spec.retention == "workqueue":  # peek: a reading consumer would take the workers' tasks
            records = peek_workqueue(self.link, spec.name, filters[0], start=seq or 1, since=since, follow=follow)
        else:
            records = read_stream(self.link, spec.name, filters, seq=seq, since=since, last=last, follow=follow)
        return self._screened(records)

    async def _screened(self, records: AsyncIterator[Record]) -> AsyncIterator[Record]:
        """Records as this client judges them (``Record.verified``; sealed content opened when for us)."""
        try:
            async for rec in records:
                yield screen_record(self.security, rec)
        finally:  # a reader that stops early ends the inner read (its ephemeral consumer) now
            await records.aclose()  # type: ignore[attr-defined]  # both readers are async generators

    async def last(self, kind: str, subject: str) -> Record | None:
        """The last stored message on ``subject`` (e.g. a node's STATUS or HEARTBEAT), or None; in secure
        mode one that fails verification has no ``envelope`` (see ``Record.error``)."""
        rec = await admin.last_message(self.link, stream_for_kind(kind).name, subject)
        return screen_record(self.security, rec) if rec is not None else None

    def accepts(self, env: Envelope, subject: str, data: bytes, headers: dict[str, str] | None) -> bool:
        """Whether a live message (heartbeat, status) may be believed (``MessageSecurity.accepts_live``)."""
        return not self.security.active or self.security.accepts_live(env, subject, data, headers)
