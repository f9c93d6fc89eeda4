"""The publish path of a ``Mesh``: store with the lean publisher, or queue in the offline outbox while
no JetStream quorum answers, and leave a server that is cut off from the quorum.

One policy for every sender (the ``Mesh``, the CLI, the outbox flusher): current-state messages
(HEARTBEAT, STATUS, ALERT) are never queued, everything else is queued only when the failure means
"no quorum reachable now".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC
from typing import Final

import msgspec

from nxs_mesh.client.outbox import Outbox, OutboxFlusher, OutboxItem
from nxs_mesh.client.security import MessageSecurity
from nxs_mesh.transport.admin import account_report
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.publisher import Ack
from nxs_mesh.wire import subjects
from nxs_mesh.wire._encode_errors import ENCODE_ERRORS
from nxs_mesh.wire.contract import (
    ENCODING_HEADER,
    MSG_ID_HEADER,
    MSGPACK,
    STREAM_OF_TYPE,
    TTL_HEADER,
    TTL_TYPES,
)
from nxs_mesh.wire.envelope import Envelope, Source, encode, json_encode, new_envelope
from nxs_mesh.wire.errors import (
    BrokenError,
    ConnectError,
    EnvelopeError,
    JetStreamUnavailable,
    MeshError,
    MeshTimeout,
    NoResponders,
    NotConnectedError,
    PublishError,
)

__all__ = ["NEVER_QUEUED", "OFFLINE_ERRORS", "PublishPath", "PublishResult", "encode_checked", "publish_headers", "queue_offline"]

log = logging.getLogger("nxs_mesh.client.publishing")

# Current-state messages are only true when sent, so they never wait in the outbox: a drained old
# heartbeat would fake presence, an old status could land after a newer one ("stopped" stuck behind
# queued work), and a cut-off doctor's alerts about the majority would be false once delivered.
NEVER_QUEUED: Final = frozenset({"HEARTBEAT", "STATUS", "ALERT"})
# Failures that mean "no JetStream quorum reachable right now": the publish goes to the outbox. The one
# policy for every sender (a Mesh's publish path, and `nxs pub`, which also meets ConnectError).
OFFLINE_ERRORS: Final = (ConnectError, JetStreamUnavailable, NotConnectedError, MeshTimeout, BrokenError)
# After this many "JetStream unavailable" answers in a row from one server, reconnect elsewhere.
_JS_UNAVAILABLE_SWITCH: Final = 3
_SWITCH_EVERY: Final = 5.0  # seconds between such switches at most (no flapping between members)


class PublishResult(msgspec.Struct, frozen=True):
    """What became of a publish (a struct, not a dataclass: one per message of ``publish_many``, and
    a frozen dataclass costs ~1.5 us to build)."""

    message_id: str
    stream: str
    seq: int | None
    duplicate: bool = False
    queued: bool = False  # True when held in the offline outbox instead of stored


# The JSON wire form starts with the message id (``message_id`` is the envelope's first field), so a
# batch takes the id's text from the bytes it has just encoded: str(UUID) costs ~1 us per message.
# Checked once here on a probe; should the layout ever differ, the id comes from str(UUID) as before.
_ID_LEAD: Final = b'{"message_id":"'
_ID_AT: Final = slice(len(_ID_LEAD), len(_ID_LEAD) + 36)


def _id_leads_json() -> bool:
    probe = new_envelope("CHAT", source=Source("probe", "probe"))
    data = encode(probe)
    return data.startswith(_ID_LEAD) and data[_ID_AT].decode() == probe.id


_ID_IN_JSON: Final = _id_leads_json()
_json_encode: Final = json_encode
# The types whose subject follows from (type, target, priority) alone (``subjects.for_envelope``).
_ROUTED_BY_TARGET: Final = frozenset({"CHAT", "COMMAND", "SYNC"})


def publish_headers(env: Envelope, *, msgpack: bool = False) -> tuple[str, dict[str, str]]:
    """The stream an envelope goes to and the headers it is published with (dedup id, ttl, encoding)."""
    kind = env.message_type
    headers = {MSG_ID_HEADER: env.id}
    if env.ttl and kind in TTL_TYPES:
        headers[TTL_HEADER] = f"{env.ttl}s"
    if msgpack:
        headers[ENCODING_HEADER] = MSGPACK
    return STREAM_OF_TYPE[kind], headers


def encode_checked(env: Envelope, *, msgpack: bool = False) -> bytes:
    """``encode`` with the failure named as the envelope field it comes from."""
    try:
        return encode(env, msgpack=msgpack)
    except (TypeError, msgspec.EncodeError) as exc:
        raise EnvelopeError(f"not JSON-encodable: {exc}", "payload.content") from None
    except UnicodeEncodeError as exc:
        raise EnvelopeError(f"not valid UTF-8 text: {exc.reason} at {exc.start}", "payload.content") from None


def queue_offline(outbox: Outbox, env: Envelope, *, subject: str | None = None,
                  security: MessageSecurity | None = None, extra: Mapping[str, str] | None = None) -> PublishResult:
    """Put an envelope in ``outbox`` without any server (the CLI when nothing answers); a flusher on
    the same file or ``nxs outbox flush`` sends it later, deduplicated by message_id. Signed (with
    ``security``'s key) as it is queued, so the stored copy is exactly what goes out."""
    subject = subject or subjects.for_envelope(env)
    stream, headers = publish_headers(env)
    headers.update(extra or {})
    data = encode_checked(env)
    if security is not None:
        security.sign(subject, env.id, data, headers)
    outbox.put(subject, data, headers, message_id=env.id, stream=stream)
    return PublishResult(env.id, stream, None, queued=True)


def _result(subject: str, mid: str, ack: Ack) -> PublishResult:
    if ack.seq is None:
        raise PublishError(f"publish to {subject}: no sequence in the server's acknowledgement")
    return PublishResult(mid, ack.stream, ack.seq, ack.duplicate)


class PublishPath:
    """Sends envelopes over a link, through an optional outbox (owned by the ``Mesh``)."""

    def __init__(self, link: Link, outbox: Outbox | None, timeout: float,
                 security: MessageSecurity | None = None) -> None:
        self._link, self.outbox, self.timeout = link, outbox, timeout
        self._sign = security.sign if security is not None and security.signer is not None else None
        self._signer = security.signer if security is not None else None
        self.flusher: OutboxFlusher | None = OutboxFlusher(outbox, self.send_window) if outbox is not None else None
        self._js_unavailable = 0
        self._last_switch = -_SWITCH_EVERY

    def reconnected(self) -> None:
        self._js_unavailable = 0
        if self.flusher is not None:
            self.flusher.wake()

    async def send_raw(self, subject: str, data: bytes, env: Envelope, *, msgpack: bool = False,
                       extra: Mapping[str, str] | None = None) -> PublishResult:
        stream, headers = publish_headers(env, msgpack=msgpack)
        mid = headers[MSG_ID_HEADER]  # str(UUID) is not free: once per message
        if extra:
            headers.update(extra)
        if self._sign is not None:
            self._sign(subject, mid, data, headers)
        if self.outbox is not None and env.message_type not in NEVER_QUEUED:
            return await self._publish_or_queue(subject, data, headers, mid, stream)
        # JsPublisher.publish raises mesh errors only (MeshTimeout, JetStreamUnavailable, StreamError, ...)
        return _result(subject, mid, await self._link.publisher.publish(subject, data, headers, self.timeout))

    async def _publish_or_queue(
        self, subject: str, data: bytes, headers: dict[str, str], message_id: str, stream: str
    ) -> PublishResult:
        assert self.outbox is not None
        # Behind what already waits (order), or straight in while reconnecting (nats-py would buffer the
        # publish and we would wait publish_timeout for nothing).
        if len(self.outbox) or not self._link.is_connected:
            return self._queue(subject, data, headers, message_id, stream)
        try:
            ack = await self._link.publisher.publish(subject, data, headers, self.timeout)
        except OFFLINE_ERRORS as exc:
            if isinstance(exc, JetStreamUnavailable | NoResponders):
                await self._note_js_unavailable()
            return self._queue(subject, data, headers, message_id, stream)
        self._js_unavailable = 0
        return _result(subject, message_id, ack)

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
        link = self._link
        if (self._js_unavailable < _JS_UNAVAILABLE_SWITCH or not link.is_connected
                or len(link.config.servers) < 2 or time.monotonic() - self._last_switch < _SWITCH_EVERY):
            return
        self._js_unavailable = 0
        try:
            await account_report(link, timeout=1.0)
            return  # JetStream answers here: a leader election, not isolation; stay
        except (MeshError, TimeoutError) as exc:
            log.warning("server %s has no JetStream quorum (%s); trying another member", link.connected_url, exc)
        self._last_switch = time.monotonic()
        link.avoid_current()
        await link.force_reconnect()

    async def send_window(self, items: list[OutboxItem]) -> list[BaseException | None]:
        """The outbox flusher's sender: publish a window pipelined, one result per item, in order."""
        if not self._link.is_connected:
            raise NotConnectedError("not connected")
        try:
            acks = await self._link.publisher.publish_batch(
                ((item.subject, item.data, item.headers) for item in items), self.timeout, "outbox flush")
        except MeshTimeout:
            return [MeshTimeout("outbox flush: no acknowledgement")] * len(items)
        out: list[BaseException | None] = []
        for ack in acks:
            if not isinstance(ack, Ack):
                out.append(ack)
            elif ack.seq is None:
                out.append(PublishError("no sequence in the acknowledgement"))
            else:
                out.append(None)
        if any(not isinstance(a, Ack) for a in acks):
            await self._note_js_unavailable()
        else:
            self._js_unavailable = 0
        return out

    async def publish_many(self, envelopes: Iterable[Envelope], *, msgpack: bool = False) -> list[PublishResult]:
        """Pipelined (see ``Mesh.publish_many``)."""
        if self._signer is not None:
            return await self._publish_signed(envelopes, msgpack)
        mids: list[str] = []
        # No future per message: JsPublisher keeps the replies in a list, bounds what is in flight and
        # raises MeshTimeout when no ack arrives for the timeout (a stall watchdog). The wire items are
        # built as they are sent (pipelined with the acks already coming back).
        acks = await self._link.publisher.publish_batch(_wire(envelopes, msgpack, mids), self.timeout)
        return _results(mids, acks)

    async def _publish_signed(self, envelopes: Iterable[Envelope], msgpack: bool) -> list[PublishResult]:
        """``publish_many`` with signatures: ed25519 costs ~25 us a message here, so chunks are signed
        in a worker thread (libsodium runs without the GIL) while the loop sends the chunk before,
        each chunk sent after the previous one (order kept)."""
        assert self._signer is not None
        loop, sign_items = asyncio.get_running_loop(), self._signer.sign_items
        mids: list[str] = []
        results: list[PublishResult] = []
        items = _wire(envelopes, msgpack, mids)
        signing: asyncio.Future[list[_Item]] | None = None  # the chunk to send next, being signed
        ahead: asyncio.Future[list[_Item]] | None = None  # the one after it
        try:
            while True:
                base = len(mids)
                chunk = [(s, d, h, mids[base + i]) for i, (s, d, h) in enumerate(itertools.islice(items, _SIGN_CHUNK))]
                ahead = loop.run_in_executor(None, sign_items, chunk) if chunk else None
                if signing is not None:
                    signed = await asyncio.shield(signing)  # cancelled, we still wait for it below
                    acks = await self._link.publisher.publish_batch([i[:3] for i in signed], self.timeout)
                    results.extend(_results([i[3] for i in signed], acks))
                if ahead is None:
                    return results
                signing = ahead
        finally:
            for job in (signing, ahead):
                if job is not None and not job.done():
                    await asyncio.wait([job])  # a thread cannot be stopped: let its chunk finish


_Item = tuple[str, bytes, dict[str, str], str]  # subject, body, headers, message id
_SIGN_CHUNK: Final = 512  # envelopes signed per thread job (one batch each: an ack wait per chunk)


def _wire(envelopes: Iterable[Envelope], msgpack: bool, mids: list[str]) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(subject, body, headers) of each envelope of a batch, built as it is sent; each message id is
    appended to ``mids`` (taken from the JSON bytes: ``message_id`` is their first field)."""
    id_in_data = _ID_IN_JSON and not msgpack
    route = _Routes()
    for env in envelopes:
        if msgpack:
            data = encode_checked(env, msgpack=True)
        elif env.timestamp.tzinfo is UTC:  # what new_envelope makes: msgspec's encoder at once
            try:
                data = _json_encode(env)
            except ENCODE_ERRORS:
                data = encode_checked(env)  # raises the EnvelopeError naming the field
        else:
            data = encode_checked(env)
        mid = data[_ID_AT].decode() if id_in_data else env.id
        headers = {MSG_ID_HEADER: mid}
        if msgpack or (env.ttl and env.message_type in TTL_TYPES):
            _, headers = publish_headers(env, msgpack=msgpack)
        mids.append(mid)
        yield route(env), data, headers


def _results(mids: list[str], acks: list[Ack | MeshError]) -> list[PublishResult]:
    results = []
    for mid, ack in zip(mids, acks, strict=True):
        if not isinstance(ack, Ack):
            raise ack
        results.append(_result(mid, mid, ack))
    return results


class _Routes:
    """The subject of each envelope of a batch: CHAT, COMMAND and SYNC envelopes to the same target
    (and priority) share one, so a batch computes it once per target instead of once per message."""

    __slots__ = ("_key", "_subject")

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._subject = ""

    def __call__(self, env: Envelope) -> str:
        kind = env.message_type
        if kind not in _ROUTED_BY_TARGET:
            return subjects.for_envelope(env)
        t = env.target
        key = (kind, t.instance_id, t.agent_id, t.broadcast, env.priority)
        if key != self._key:
            self._key, self._subject = key, subjects.for_envelope(env)
        return self._subject
