"""JetStream management over a ``Link``: reports on streams, consumers and the account, stored
messages by sequence, purge, and releasing deliveries. Answers are plain dataclasses (never nats-py
objects) and errors are the mesh's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from nats.js import errors as jse

from nxs_mesh.transport.link import Link
from nxs_mesh.transport.reader import Record
from nxs_mesh.transport.translate import translate_nats_errors

__all__ = [
    "AccountReport",
    "ConsumerReport",
    "StreamReport",
    "account_report",
    "consumer_report",
    "consumer_reports",
    "delete_message",
    "find_stream",
    "get_message",
    "last_message",
    "purge_stream",
    "release",
    "stream_report",
]


@dataclass(frozen=True)
class StreamReport:
    name: str
    subjects: tuple[str, ...]
    retention: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int
    replicas: int
    leader: str | None
    replicas_current: tuple[bool, ...] = ()  # per follower: caught up with the leader

    def as_dict(self) -> dict[str, Any]:
        return {"stream": self.name, "exists": True, "subjects": list(self.subjects), "retention": self.retention,
                "messages": self.messages, "bytes": self.bytes, "consumers": self.consumers,
                "replicas": self.replicas, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "leader": self.leader}


@dataclass(frozen=True)
class ConsumerReport:
    stream: str
    name: str
    pending: int  # not yet delivered
    ack_pending: int  # delivered, not yet acknowledged
    redelivered: int

    @property
    def backlog(self) -> int:
        return self.pending + self.ack_pending


@dataclass(frozen=True)
class AccountReport:
    streams: int
    consumers: int
    storage: int  # bytes


def _stream(info: Any) -> StreamReport:
    cfg, st = info.config, info.state
    cluster = info.cluster
    return StreamReport(
        name=cfg.name, subjects=tuple(cfg.subjects or ()), retention=str(getattr(cfg.retention, "value", cfg.retention)),
        messages=st.messages or 0, bytes=st.bytes or 0, first_seq=st.first_seq or 0, last_seq=st.last_seq or 0,
        consumers=st.consumer_count or 0, replicas=cfg.num_replicas or 1,
        leader=cluster.leader if cluster else None,
        replicas_current=tuple(bool(r.current) for r in (cluster.replicas or [])) if cluster else (),
    )


def _consumer(stream: str, info: Any) -> ConsumerReport:
    return ConsumerReport(stream, info.config.durable_name or info.name or "", info.num_pending or 0,
                          info.num_ack_pending or 0, info.num_redelivered or 0)


async def stream_report(link: Link, name: str) -> StreamReport | None:
    """The stream's state, or None when it does not exist."""
    with translate_nats_errors(f"stream {name}"):
        try:
            return _stream(await link.js.stream_info(name))
        except jse.NotFoundError:
            return None


async def purge_stream(link: Link, name: str) -> int:
    """Delete every message of the stream; returns how many there were."""
    with translate_nats_errors(f"purge {name}"):
        count = (await link.js.stream_info(name)).state.messages or 0
        await link.js.purge_stream(name)
    return int(count)


async def consumer_report(link: Link, stream: str, name: str) -> ConsumerReport | None:
    with translate_nats_errors(f"consumer {stream}/{name}"):
        try:
            return _consumer(stream, await link.js.consumer_info(stream, name))
        except jse.NotFoundError:
            return None


async def consumer_reports(link: Link, stream: str) -> list[ConsumerReport]:
    with translate_nats_errors(f"consumers of {stream}"):
        return [_consumer(stream, ci) for ci in await link.js.consumers_info(stream)]


async def account_report(link: Link, timeout: float | None = None) -> AccountReport:
    with translate_nats_errors("jetstream account"):
        info = await (asyncio.wait_for(link.js.account_info(), timeout) if timeout else link.js.account_info())
    return AccountReport(info.streams or 0, info.consumers or 0, info.storage or 0)


async def find_stream(link: Link, subject: str, timeout: float = 2.0) -> str | None:
    """The stream that stores ``subject``, or None when no stream does."""
    with translate_nats_errors(f"stream for {subject}"):
        try:
            return str(await asyncio.wait_for(link.js.find_stream_name_by_subject(subject), timeout))
        except jse.NotFoundError:
            return None


async def get_message(link: Link, stream: str, seq: int, *, subject: str | None = None,
                      next_: bool = False) -> Record | None:
    """Message ``seq`` of ``stream`` (with ``next_``, the first at or after it on ``subject``), or None."""
    with translate_nats_errors(f"message {stream}/{seq}"):
        try:
            raw = await link.js.get_msg(stream, seq=seq, subject=subject, next=next_)
        except jse.NotFoundError:
            return None
    return None if raw is None or raw.seq is None else Record.from_raw(raw)


async def last_message(link: Link, stream: str, subject: str) -> Record | None:
    with translate_nats_errors(f"last message on {subject}"):
        try:
            raw = await link.js.get_last_msg(stream, subject)
        except jse.NotFoundError:
            return None
    return Record.from_raw(raw)


async def delete_message(link: Link, stream: str, seq: int) -> None:
    with translate_nats_errors(f"delete {stream}/{seq}"):
        await link.js.delete_msg(stream, seq)


async def release(link: Link, ack_subjects: list[str], timeout: float = 5.0) -> int:
    """Nak deliveries by their ack subjects, so JetStream hands them to another consumer member now
    (a dead worker's claimed tasks); returns how many were sent."""
    sent = 0
    for subject in ack_subjects:
        if subject.startswith("$JS.ACK."):
            await link.publish(subject, b"-NAK")
            sent += 1
    await link.flush(timeout)
    return sent
