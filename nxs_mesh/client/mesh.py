"""The client agents embed: publish, consume, tail, request/reply.

    async with Mesh(MeshConfig(servers=("nats://127.0.0.1:4222",), instance_id="nxs-node-001")) as mesh:
        ack = await mesh.publish("CHAT", "hello", to="nxs-node-002")
        async for rec in mesh.tail("chat", last=5):
            print(rec.envelope)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext

from nxs_mesh.client.consumer import Consumer, ConsumerSpec, Handler
from nxs_mesh.client.outbox import Outbox, OutboxFlusher, OutboxItem
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.connection import ReconnectPolicy, connect, server_path
from nxs_mesh.transport.publisher import Ack, JsPublisher
from nxs_mesh.transport.reader import Record, peek_workqueue, read_stream
from nxs_mesh.transport.streams import EnsureResult, ensure_streams, stream_for_kind
from nxs_mesh.transport.translate import translate_nats_errors
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import (
    DEFAULT_PRIORITY,
    DEFAULT_TTL,
    ENCODING_HEADER,
    MSG_ID_HEADER,
    MSGPACK,
    REQUEST_PRIORITY,
    STREAM_OF_TYPE,
    TTL_HEADER,
    TTL_TYPES,
)
from nxs_mesh.wire.envelope import Envelope, Source, check_id, decode, encode, new_envelope
from nxs_mesh.wire.errors import (
    BrokenError,
    ClosedError,
    EnvelopeError,
    JetStreamUnavailable,
    MeshTimeout,
    NoResponders,
    NotConnectedError,
    PublishError,
    RemoteError,
)

__all__ = ["Mesh", "MeshState", "PublishResult"]

# Current-state messages are only true when sent, so they never wait in the outbox: a drained old
# heartbeat would fake presence, an old status could land after a newer one ("stopped" stuck behind
# queued work), and a cut-off doctor's alerts about the majority would be false once delivered.
_NEVER_QUEUED: Final = frozenset({"HEARTBEAT", "STATUS", "ALERT"})
# Failures that mean "no JetStream quorum reachable right now": the publish goes to the outbox.
_OFFLINE_ERRORS: Final = (JetStreamUnavailable, NotConnectedError, MeshTimeout, BrokenError)
# After this many "JetStream unavailable" answers in a row from one server, reconnect elsewhere.
_JS_UNAVAILABLE_SWITCH: Final = 3
_SWITCH_EVERY: Final = 5.0  # seconds between such switches at most (no flapping between members)


def publish_headers(env: Envelope, *, msgpack: bool = False) -> tuple[str, dict[str, str]]:
    """The stream an envelope goes to and the headers it is published with (dedup id, ttl, encoding)."""
    kind = env.message_type
    headers = {MSG_ID_HEADER: env.id}
    if env.ttl and kind in TTL_TYPES:
        headers[TTL_HEADER] = f"{env.ttl}s"
    if msgpack:
        headers[ENCODING_HEADER] = MSGPACK
    stream = STREAM_OF_TYPE[kind]
    return stream, headers


def queue_offline(outbox: Outbox, env: Envelope, *, subject: str | None = None) -> PublishResult:
    """Put an envelope in ``outbox`` without any server (the CLI when nothing answers); the node
    worker's flusher (same file) or ``nxs outbox flush`` sends it later, deduplicated by message_id."""
    subject = subject or subjects.for_envelope(env)
    stream, headers = publish_headers(env)
    outbox.put(subject, encode(env), headers, message_id=env.id, stream=stream)
    return PublishResult(env.id, stream, None, queued=True)


class MeshState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class PublishResult:
    message_id: str
    stream: str
    seq: int | None
    duplicate: bool = False
    queued: bool = False  # True when held in the offline outbox instead of stored


class Mesh:
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
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pub: JsPublisher | None = None  # the publish path (send, publish_many, the outbox flusher)
        self._consumers: list[Consumer] = []
        self.state = MeshState.UNOPENED
        self.publish_timeout = 5.0
        self._own_outbox = outbox is not None and not isinstance(outbox, Outbox)
        self.outbox: Outbox | None = Outbox(outbox) if self._own_outbox else outbox  # type: ignore[arg-type]
        self.flusher: OutboxFlusher | None = None
        self._policy = ReconnectPolicy()
        self._js_unavailable = 0
        self._last_switch = -_SWITCH_EVERY

    def __repr__(self) -> str:
        server = self._nc.connected_url.netloc if self._nc and self._nc.connected_url else "-"
        queued = f", {len(self.outbox)} outbox" if self.outbox is not None and self.state is MeshState.OPEN else ""
        return (f"<Mesh {self.config.instance_id}/{self.config.agent_id} {self.state.name} "
                f"[server {server}, {len(self._consumers)} consumers{queued}]>")

    # -- lifecycle ---------------------------------------------------------------------------------
    async def connect(self) -> Mesh:
        if self.state is MeshState.CLOSED:
            raise ClosedError("this Mesh was closed; create a new one")
        if self.state is MeshState.OPEN:
            return self
        self._nc = await connect(self.config, policy=self._policy, reconnected_cb=self._on_reconnected)
        self._js = self._nc.jetstream(timeout=self.publish_timeout)
        self._pub = JsPublisher(self._nc)
        try:
            with translate_nats_errors("connect"):
                await self._pub.start()
        except BaseException:
            nc, self._nc, self._js, self._pub = self._nc, None, None, None
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        self.state = MeshState.OPEN
        if self.outbox is not None:
            self.flusher = OutboxFlusher(self.outbox, self._send_window)
            self.flusher.start()
        if self._ensure:
            try:
                await self.ensure_streams()
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
        if self.flusher is not None:
            await self.flusher.stop()  # what is still queued stays on disk for the next start
        if self._own_outbox and self.outbox is not None:
            self.outbox.close()
        pub, self._pub = self._pub, None
        if pub is not None:
            await pub.close()  # publishes still waiting for an ack fail with ClosedError
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(nc.drain(), 5))
            with contextlib.suppress(Exception):
                await nc.close()

    async def __aenter__(self) -> Mesh:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def nc(self) -> Client:
        if self._nc is None or self.state is not MeshState.OPEN:
            if self.state is MeshState.CLOSED:
                raise ClosedError("this Mesh is closed")
            raise NotConnectedError("not connected: use `async with Mesh(...)` or `await mesh.connect()`")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        self.nc  # noqa: B018 - raises the right error when not open
        assert self._js is not None
        return self._js

    @property
    def connected_url(self) -> str | None:
        if self._nc is None or self._nc.connected_url is None:
            return None
        u = self._nc.connected_url
        return f"{u.scheme}://{u.hostname}:{u.port}"

    @property
    def server_path(self) -> str:
        """"local", "peer", "relay" or "disconnected": which path this client uses now."""
        if self._nc is None or not self._nc.is_connected:
            return "disconnected"
        return server_path(self.config.servers, self.connected_url)

    async def _on_reconnected(self) -> None:
        self._js_unavailable = 0
        if self.flusher is not None:
            self.flusher.wake()

    async def ensure_streams(self, replicas: int | None = None) -> list[EnsureResult]:
        """Create/update every mesh stream (idempotent); replicas default to min(3, cluster size)."""
        n = replicas or self.config.replicas or await self.cluster_size()
        return await ensure_streams(self.js, replicas=min(3, n))

    async def cluster_size(self) -> int:
        info = self.nc._server_info or {}
        routes = info.get("connect_urls") or []
        return max(1, len(set(routes)) if info.get("cluster") else 1)

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
    ) -> PublishResult:
        """Build, validate and store one envelope; returns its stream sequence (or that it was a duplicate)."""
        if capability is not None:
            check_id(capability, "capability")
            metadata = {**(metadata or {}), "capability": capability}
        env = new_envelope(
            message_type, content, source=self.source, to=to, agent=agent, priority=priority, ttl=ttl,
            metadata=metadata, correlation_id=correlation_id, reply_to=reply_to, message_id=message_id,
        )
        return await self.send(env)

    async def send(self, env: Envelope, *, subject: str | None = None, msgpack: bool = False) -> PublishResult:
        """Store a ready envelope (its ``message_id`` is the dedup key: re-sending it is harmless)."""
        subject = subject or subjects.for_envelope(env)
        try:
            data = encode(env, msgpack=msgpack)
        except (TypeError, msgspec.EncodeError) as exc:
            raise EnvelopeError(f"not JSON-encodable: {exc}", "payload.content") from None
        return await self.send_raw(subject, data, env, msgpack=msgpack)

    async def send_raw(self, subject: str, data: bytes, env: Envelope, *, msgpack: bool = False) -> PublishResult:
        stream, headers = publish_headers(env, msgpack=msgpack)
        mid = headers["Nats-Msg-Id"]  # str(UUID) is not free: once per message
        if self.outbox is not None and env.message_type not in _NEVER_QUEUED:
            return await self._publish_or_queue(subject, data, headers, mid, stream)
        # JsPublisher.publish raises mesh errors only (MeshTimeout, JetStreamUnavailable, StreamError, ...)
        ack = await (self._pub if self.state is MeshState.OPEN and self._pub is not None else self.pub).publish(
            subject, data, headers, self.publish_timeout)
        if ack.seq is None:
            raise PublishError(f"publish to {subject}: no sequence in the server's acknowledgement")
        return PublishResult(mid, ack.stream, ack.seq, ack.duplicate)

    @property
    def pub(self) -> JsPublisher:
        self.nc  # noqa: B018 - raises the right error when not open
        assert self._pub is not None
        return self._pub

    async def _publish_or_queue(
        self, subject: str, data: bytes, headers: dict[str, str], message_id: str, stream: str
    ) -> PublishResult:
        assert self.outbox is not None and self.flusher is not None
        nc = self.nc
        # Behind what already waits (order), or straight in while reconnecting (nats-py would buffer the
        # publish and we would wait publish_timeout for nothing).
        if len(self.outbox) or not nc.is_connected:
            return self._queue(subject, data, headers, message_id, stream)
        try:
            ack = await self.pub.publish(subject, data, headers, self.publish_timeout)
        except _OFFLINE_ERRORS as exc:
            if isinstance(exc, JetStreamUnavailable | NoResponders):
                await self._note_js_unavailable()
            return self._queue(subject, data, headers, message_id, stream)
        self._js_unavailable = 0
        if ack.seq is None:
            raise PublishError(f"publish to {subject}: no sequence in the server's acknowledgement")
        return PublishResult(message_id, ack.stream, ack.seq, ack.duplicate)

    def _queue(self, subject: str, data: bytes, headers: dict[str, str], message_id: str, stream: str) -> PublishResult:
        assert self.outbox is not None and self.flusher is not None
        self.outbox.put(subject, data, headers, message_id=message_id, stream=stream)  # may raise OutboxFull
        self.flusher.wake()
        return PublishResult(message_id, stream, None, queued=True)

    async def _note_js_unavailable(self) -> None:
        """An isolated server answers, but without JetStream quorum: after a few, try another member.

        A stream electing a new leader answers the same way on every server, so before leaving we ask
        this server for the JetStream account info (served by the meta leader): only when that fails
        too is the server cut off (or JetStream is off there) and another member worth trying."""
        self._js_unavailable += 1
        nc, js = self._nc, self._js
        if (self._js_unavailable < _JS_UNAVAILABLE_SWITCH or nc is None or js is None
                or len(self.config.servers) < 2 or time.monotonic() - self._last_switch < _SWITCH_EVERY):
            return
        self._js_unavailable = 0
        try:
            await asyncio.wait_for(js.account_info(), 1.0)
            return  # JetStream answers here: a leader election, not isolation; stay
        except Exception:
            pass
        self._last_switch = time.monotonic()
        self._policy.avoid(nc.connected_url.netloc if nc.connected_url else None)
        await nc.force_reconnect()

    async def _send_window(self, items: list[OutboxItem]) -> list[BaseException | None]:
        """The outbox flusher's sender: publish a window pipelined, one result per item, in order."""
        nc, pub = self._nc, self._pub
        if nc is None or not nc.is_connected or pub is None:
            raise NotConnectedError("not connected")
        try:
            acks = await pub.publish_batch(
                ((item.subject, item.data, item.headers) for item in items), self.publish_timeout, "outbox flush")
        except MeshTimeout:
            return [MeshTimeout("outbox flush: no acknowledgement")] * len(items)
        out: list[BaseException | None] = []
        for ack in acks:
            if type(ack) is not Ack:
                out.append(ack)  # type: ignore[arg-type]
            elif ack.seq is None:
                out.append(PublishError("no sequence in the acknowledgement"))
            else:
                out.append(None)
        if any(type(a) is not Ack for a in acks):
            await self._note_js_unavailable()
        else:
            self._js_unavailable = 0
        return out

    async def publish_many(self, envelopes: Iterable[Envelope], *, msgpack: bool = False) -> list[PublishResult]:
        """Store ready envelopes pipelined: each goes out without waiting for the previous acknowledgement
        (up to ``JsPublisher.max_in_flight`` = 4096 in flight); returns one ``PublishResult`` per envelope, in order.

            results = await mesh.publish_many(new_envelope("CHAT", i, source=mesh.source) for i in range(1000))

        On an error, envelopes already stored stay stored; re-sending the batch is harmless (each
        ``message_id`` is its dedup key).
        """
        pub = self.pub
        mids: list[str] = []

        def wire() -> Iterator[tuple[str, bytes, dict[str, str]]]:
            # Built as they are sent (pipelined with the acks already coming back).
            for env in envelopes:
                try:
                    data = encode(env, msgpack=msgpack)
                except (TypeError, msgspec.EncodeError) as exc:
                    raise EnvelopeError(f"not JSON-encodable: {exc}", "payload.content") from None
                _, headers = publish_headers(env, msgpack=msgpack)
                mids.append(headers["Nats-Msg-Id"])
                yield subjects.for_envelope(env), data, headers

        # No future per message: JsPublisher keeps the replies in a list, bounds what is in flight and
        # raises MeshTimeout when no ack arrives for publish_timeout (a stall watchdog).
        acks = await pub.publish_batch(wire(), self.publish_timeout)
        results = []
        for mid, ack in zip(mids, acks, strict=True):
            if type(ack) is not Ack:
                raise ack  # type: ignore[misc]
            if ack.seq is None:
                raise PublishError(f"publish of {mid}: no sequence in the server's acknowledgement")
            results.append(PublishResult(mid, ack.stream, ack.seq, ack.duplicate))
        return results

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
    ) -> Consumer:
        """Run a durable consumer of ``kind`` (chat, command, sync, task, ...) calling ``handler`` per envelope.

        By default it receives what is addressed to this instance/agent plus broadcasts. The handler's
        outcome decides the ack: return = ack, ``Retry`` = nak with delay, ``Reject`` = dead letter,
        any other exception = retry with backoff until ``max_deliver``, then dead letter.
        """
        spec = stream_for_kind(kind)
        if filters is None:
            if kind.lower() in ("chat", "command", "sync"):
                filters = subjects.filters_for(kind, instance or self.config.instance_id, agent)
            else:
                filters = subjects.filters_for(kind, instance)
        durable = durable or f"{kind.lower()}-{self.config.instance_id}-{(agent or 'all').replace('*', 'all')}"
        check_id(durable.replace("_", "-"), "durable")
        consumer = Consumer(
            self.nc, self.js,
            ConsumerSpec(
                stream=spec.name, durable=durable, filters=list(filters),
                ack_wait=ack_wait or self.config.ack_wait,
                max_deliver=max_deliver or self.config.max_deliver,
                batch=batch, concurrency=concurrency, backoff_base=backoff_base,
                dlq_instance=self.config.instance_id,
            ),
            handler,
        )
        await consumer.start()
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
            return peek_workqueue(self.js, spec.name, filters[0], start=seq or 1, since=since, follow=follow)
        return read_stream(self.nc, self.js, spec.name, filters, seq=seq, since=since, last=last, follow=follow)

    async def last(self, kind: str, subject: str) -> Record | None:
        """The last stored message on ``subject`` (e.g. a node's STATUS or HEARTBEAT), or None."""
        from nats.js import errors as jse

        spec = stream_for_kind(kind)
        with translate_nats_errors(f"last message on {subject}"):
            try:
                raw = await self.js.get_last_msg(spec.name, subject)
            except jse.NotFoundError:
                return None
        return Record.from_raw(raw)

    # -- request / reply ---------------------------------------------------------------------------
    async def request(
        self,
        to: str,
        command: str,
        args: Any = None,
        *,
        agent: str = "*",
        timeout: float = 5.0,
        priority: int = REQUEST_PRIORITY,
    ) -> Envelope:
        """Send a COMMAND and wait for its RESULT; raises ``MeshTimeout`` or ``RemoteError``."""
        corr = str(uuid.uuid4())
        _, env = await self.call(
            "COMMAND", {"command": command, "args": args}, correlation_id=corr, timeout=timeout,
            waiting_for=f"reply from {to} to {command!r}", to=to, agent=agent, priority=priority,
            ttl=max(1, int(timeout + 0.999)),
        )
        return env

    async def call(
        self, message_type: str, content: Any, *, correlation_id: str, timeout: float, waiting_for: str,
        **publish: Any,
    ) -> tuple[PublishResult, Envelope]:
        """Publish with ``reply_to`` = ``nxs.result.<correlation_id>`` and wait for that RESULT.

        Subscribes before publishing, so a fast answer is not missed. Raises ``MeshTimeout`` after
        ``timeout`` and ``RemoteError`` when the RESULT carries an error."""
        reply = subjects.result(correlation_id)
        with translate_nats_errors("subscribe"):
            sub = await self.nc.subscribe(reply, max_msgs=1)
        try:
            ack = await self.publish(
                message_type, content, correlation_id=correlation_id, reply_to=reply, **publish
            )
            try:
                msg = await sub.next_msg(timeout=timeout)
            except TimeoutError:
                raise MeshTimeout(f"no {waiting_for} within {timeout}s") from None
            env = decode(msg.data)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        error = env.payload.metadata.get("error")
        if error:
            raise RemoteError(str(error), env.source.instance_id)
        return ack, env

    async def reply(self, request: Envelope, content: Any = None, *, error: str | None = None) -> PublishResult:
        """Answer a COMMAND with a RESULT envelope (correlated by the request's correlation id)."""
        corr = request.correlation_id if isinstance(request.correlation_id, str) else request.id
        metadata: dict[str, Any] = {"ok": error is None}
        if error is not None:
            metadata["error"] = error
        return await self.publish(
            "RESULT", content, to=request.source.instance_id, agent=request.source.agent_id,
            correlation_id=corr, metadata=metadata, ttl=request.ttl,
        )
