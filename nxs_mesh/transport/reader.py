"""Ordered, replaying reads of a stream (``Mesh.tail``): from a sequence, a time, or the last N.

Uses an ephemeral, unacknowledged pull consumer that the server forgets when we stop reading.
Records that do not decode are still yielded (with ``error`` set) so a reader can show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js import errors as jse

from nxs_mesh.transport.link import Link
from nxs_mesh.transport.translate import translate_nats_errors
from nxs_mesh.wire.contract import ENCODING_HEADER
from nxs_mesh.wire.envelope import Envelope, decode
from nxs_mesh.wire.errors import EnvelopeError, MeshError
from nxs_mesh.wire.sealing import SEALED_HEADER

__all__ = ["Record", "peek_workqueue", "read_stream"]


@dataclass(frozen=True)
class Record:
    """One stored message as read back: the envelope when it decodes, the error when it does not."""

    seq: int
    subject: str
    stored_at: datetime
    data: bytes
    headers: dict[str, str]
    envelope: Envelope | None
    error: str | None = None
    #: Signature check by the reading ``Mesh`` (``client.security``): True verified, False failed,
    #: None not checked (unsigned, or no trust file).
    verified: bool | None = None

    @classmethod
    def from_msg(cls, msg: Msg) -> Record:
        meta = msg.metadata
        headers = dict(msg.headers or {})
        try:
            env: Envelope | None = _decode(msg.data, headers)
            error = None
        except EnvelopeError as exc:
            env, error = None, str(exc)
        return cls(meta.sequence.stream, msg.subject, meta.timestamp, msg.data, headers, env, error)

    @classmethod
    def from_raw(cls, raw: Any) -> Record:
        """From a direct get (``js.get_msg`` / ``get_last_msg``): a stored message without a delivery."""
        headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
        data = raw.data or b""
        try:
            env: Envelope | None = _decode(data, headers)
            error = None
        except EnvelopeError as exc:
            env, error = None, str(exc)
        return cls(raw.seq or 0, raw.subject or "", raw.time or datetime.now(UTC), data, headers, env, error)


def _decode(data: bytes, headers: dict[str, str]) -> Envelope:
    # Sealed content is ciphertext until the reader opens it: its type's shape is checked then.
    return decode(data, msgpack=headers.get(ENCODING_HEADER) == "msgpack", strict_content=SEALED_HEADER not in headers)


def _config(name: str, filters: Sequence[str], *, seq: int | None, since: datetime | None) -> jsapi.ConsumerConfig:
    policy = jsapi.DeliverPolicy.ALL
    extra: dict[str, object] = {}
    if seq is not None:
        policy, extra["opt_start_seq"] = jsapi.DeliverPolicy.BY_START_SEQUENCE, max(1, seq)
    elif since is not None:
        policy, extra["opt_start_time"] = jsapi.DeliverPolicy.BY_START_TIME, since
    filt = {"filter_subject": filters[0]} if len(filters) == 1 else {"filter_subjects": list(filters)}
    return jsapi.ConsumerConfig(
        name=name,
        ack_policy=jsapi.AckPolicy.NONE,
        deliver_policy=policy,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
        **filt,
        **extra,  # type: ignore[arg-type]
    )


async def _open(
    js: JetStreamContext, stream: str, filters: Sequence[str], *,
    seq: int | None, since: datetime | None, last: int | None,
) -> tuple[str, int, int]:
    """Create the ephemeral consumer; returns (name, pending, how many to skip for last-N)."""
    name = f"nxs_tail_{uuid.uuid4().hex[:16]}"
    if last is None:
        info = await js.add_consumer(stream, _config(name, filters, seq=seq, since=since))
        return name, info.num_pending or 0, 0
    # last N with a filter: widen a window back from the end until it holds N matching messages.
    state = (await js.stream_info(stream)).state
    first, end = max(1, state.first_seq), state.last_seq
    window = max(1, last)
    while True:
        start = max(first, end - window + 1)
        info = await js.add_consumer(stream, _config(name, filters, seq=start, since=None))
        pending = info.num_pending or 0
        if pending >= last or start <= first:
            return name, pending, max(0, pending - last)
        await js.delete_consumer(stream, name)
        window *= 4


async def read_stream(
    link: Link,
    stream: str,
    filters: Sequence[str],
    *,
    seq: int | None = None,
    since: datetime | None = None,
    last: int | None = None,
    follow: bool = False,
    batch: int = 256,
    poll: float = 1.0,
) -> AsyncIterator[Record]:
    """Yield stored messages in stream order; with ``follow`` keep waiting for new ones."""
    if last is not None and last < 1:
        return
    js = link.js
    with translate_nats_errors(f"tail {stream}"):
        try:
            name, pending, skip = await _open(js, stream, filters, seq=seq, since=since, last=last)
        except jse.NotFoundError:
            raise MeshError(f"stream {stream} does not exist; run `nxs init`") from None
        psub = await js.pull_subscribe_bind(consumer=name, stream=stream)
    try:
        if pending == 0 and not follow:
            return
        while True:
            try:
                msgs = await psub.fetch(batch, timeout=poll)
            except TimeoutError:
                if not follow:
                    return  # pending was counted at open; nothing more arrived
                continue
            except Exception as exc:  # translated, never swallowed
                with translate_nats_errors(f"tail {stream}"):
                    raise exc
            for msg in msgs:
                if skip:
                    skip -= 1
                elif since is None or msg.metadata.timestamp >= since:
                    # (a start time after the last message makes the server begin at the last one)
                    yield Record.from_msg(msg)
                if not follow and msg.metadata.num_pending == 0:
                    return
    finally:
        with contextlib.suppress(Exception):  # the reader is done; an ephemeral consumer expires anyway
            await psub.unsubscribe()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(js.delete_consumer(stream, name), 2)


async def peek_workqueue(
    link: Link, stream: str, subject: str, *, start: int = 1, since: datetime | None = None,
    follow: bool = False, poll: float = 1.0,
) -> AsyncIterator[Record]:
    """Read a work-queue stream without taking its work: message by message with direct gets (a
    consumer there would compete with the workers, and the server refuses unacknowledged ones)."""
    cursor = max(1, start)
    while True:
        with translate_nats_errors(f"tail {stream}"):
            try:
                raw = await link.js.get_msg(stream, seq=cursor, subject=subject, next=True)
            except jse.NotFoundError:
                raw = None
        if raw is None or raw.seq is None:
            if not follow:
                return
            await asyncio.sleep(poll)  # sleep-ok: polling for new work items; a consumer would take them
            continue
        cursor = raw.seq + 1
        if since is not None and raw.time is not None and raw.time < since:
            continue
        yield Record.from_raw(raw)
