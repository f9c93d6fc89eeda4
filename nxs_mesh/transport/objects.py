"""The NATS Object Store in its own wire format, written on JetStream primitives, streamed both ways.

The format (ADR-20, what the `nats object` CLI and nats-py read and write; its names and the meta
document live in ``object_meta``): bucket ``B`` is the stream ``OBJ_B`` over ``$O.B.C.>`` (chunks) and ``$O.B.M.>`` (meta); an object's chunks go to
``$O.B.C.<nuid>`` in order, then its meta (JSON: name, nuid, size, chunks, digest ``SHA-256=<urlsafe
b64>``, ...) to ``$O.B.M.<urlsafe b64 of the name>`` with ``Nats-Rollup: sub``.

Why not nats-py's ``ObjectStore``: its ``put`` waits one round trip per chunk and cannot resume; its
``get`` without ``writeinto`` concatenates the whole object in memory, never checks the chunk count
or size (a meta whose chunks were purged makes it wait forever), and neither survives a dropped
connection. Here:

- put pipelines a window of chunks, each with ``Nats-Msg-Id = <nuid>.<index>``: after a drop the
  window is sent again and the server drops what it already stored; the acknowledged stream
  sequences prove the chunks are stored in order (a chunk lost in the drop while later ones went
  out from the reconnect buffer would be stored after them: those later ones are deleted and sent
  again under fresh ids). The meta goes out last, so a reader never sees a partial object.
- get reads with an ephemeral pull consumer that first counts the stored chunks (fewer than the meta
  says: ``FileCorrupt`` before any byte is handed out), resumes after a drop from the next stream
  sequence, and checks size and SHA-256 at the end.

    await ensure_bucket(link, "NXS_FILES", replicas=3)
    info = await put_object(link, "NXS_FILES", "a.bin", chunks)
    async for data in read_object(link, info): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Final

from nats.js import api as jsapi
from nats.js import errors as jse
from nats.nuid import NUID

from nxs_mesh.transport.link import Link
from nxs_mesh.transport.object_meta import (
    BUCKET,
    CHUNK_SIZE,
    DIGEST_PREFIX,
    StoredObject,
    chunk_subject,
    digest_bytes,
    digest_of,
    meta_subject,
    stream_name,
)
from nxs_mesh.transport.publisher import Ack
from nxs_mesh.transport.translate import mesh_error_for, translate_nats_errors
from nxs_mesh.wire.errors import (
    BrokenError,
    ClosedError,
    FileCorrupt,
    FileError,
    FileNotFound,
    JetStreamUnavailable,
    MeshError,
    MeshTimeout,
    NotConnectedError,
)

__all__ = [
    "BUCKET", "CHUNK_SIZE", "DIGEST_PREFIX", "Progress", "StoredObject", "chunk_subject", "delete_object",
    "digest_of", "ensure_bucket", "list_objects", "meta_subject", "object_info", "put_object", "read_object",
    "stream_name",
]

log = logging.getLogger("nxs_mesh.transport.objects")

WINDOW: Final = 64  # chunks in flight on put (8 MiB at the default size)
READ_BATCH: Final = 32  # chunks per pull on get
ACK_TIMEOUT: Final = 5.0
RETRY_FOR: Final = 60.0  # keep retrying a dropped connection this long (within the 2 min dedup window)
_ROLLUP: Final = {"Nats-Rollup": "sub"}

#: ``progress(done_bytes, total_bytes)``; total is None when the size is not known in advance.
Progress = Callable[[int, "int | None"], None]

_TRANSIENT: Final = (MeshTimeout, NotConnectedError, BrokenError, JetStreamUnavailable, ClosedError)


# -- bucket ------------------------------------------------------------------------------------------
async def ensure_bucket(link: Link, bucket: str = BUCKET, *, replicas: int = 1) -> str:
    """Create the bucket's stream as nats-py/Go would, or bring its replicas to ``replicas``; idempotent.
    Returns "created", "updated" or "unchanged"."""
    js, stream = link.js, stream_name(bucket)
    with translate_nats_errors(f"bucket {bucket}"):
        try:
            info = await js.stream_info(stream)
        except jse.NotFoundError:
            try:
                await js.create_object_store(bucket, config=jsapi.ObjectStoreConfig(
                    description="nxs-mesh files", storage=jsapi.StorageType.FILE, replicas=replicas))
                return "created"
            except jse.BadRequestError:  # created by someone else meanwhile
                info = await js.stream_info(stream)
        if info.config.num_replicas == replicas:
            return "unchanged"
        info.config.num_replicas = replicas
        await js.update_stream(info.config)
        return "updated"


async def object_info(link: Link, bucket: str, name: str, *, deleted: bool = False) -> StoredObject:
    """The object's meta; ``FileNotFound`` when there is none (or it was deleted, unless ``deleted``).
    Retries while the connection or the stream's leader is away (a restart, a leader election)."""
    what = f"file {name!r}"
    deadline = time.monotonic() + RETRY_FOR
    while True:
        try:
            with translate_nats_errors(what):
                try:
                    raw = await link.js.get_last_msg(stream_name(bucket), meta_subject(bucket, name))
                except jse.NotFoundError:
                    raise FileNotFound(f"no file {name!r} in {bucket}") from None
            break
        except FileError:
            raise
        except MeshError as exc:
            await _ready(link, deadline, exc, what)
    info = StoredObject.from_json(raw.data or b"", f"file {name!r}")
    if info.deleted and not deleted:
        raise FileNotFound(f"no file {name!r} in {bucket} (deleted)")
    return info


async def _purge(link: Link, bucket: str, subject: str) -> None:
    with translate_nats_errors(f"purge {subject}"):
        await link.js.purge_stream(stream_name(bucket), subject=subject)


async def _ready(link: Link, deadline: float, error: MeshError, what: str) -> None:
    """After a transient error: wait until the connection is usable again, or raise ``FileError``."""
    text = str(error) if str(error).startswith(what) else f"{what}: {error}"
    # Whatever fails while the connection is down (a full reconnect buffer included) is the drop's doing.
    if not isinstance(error, _TRANSIENT) and link.is_connected:
        raise FileError(text) from error
    delay = 0.05
    while time.monotonic() < deadline:
        try:
            if link.nc.is_connected:
                return
        except ClosedError:
            raise FileError(text) from error
        except NotConnectedError:
            pass  # being reopened
        await asyncio.sleep(delay)  # sleep-ok: waiting for the reconnect, with a deadline
        delay = min(1.0, delay * 2)
    raise FileError(f"{text} (gave up after {RETRY_FOR:g}s)") from error


# -- put ---------------------------------------------------------------------------------------------
def _first_out_of_order(seqs: list[int | None], after: int) -> int | None:
    prev = after
    for i, seq in enumerate(seqs):
        if seq is None or seq <= prev:
            return i
        prev = seq
    return None


async def _send(link: Link, items: list[tuple[str, bytes, dict[str, str]]], what: str) -> list[Ack | MeshError]:
    try:
        return await link.publisher.publish_batch(items, ACK_TIMEOUT, what)
    except MeshError as exc:
        return [exc] * len(items)


async def _store_window(link: Link, stream: str, subject: str, ids: list[str], datas: list[bytes], after: int,
                        deadline: float, what: str) -> int:
    """Store one window of chunks in order after stream sequence ``after``; the last one's sequence."""
    seqs: list[int | None] = [None] * len(datas)
    attempt = 0
    while True:
        todo = [i for i, s in enumerate(seqs) if s is None]
        acks = await _send(link, [(subject, datas[i], {"Nats-Msg-Id": ids[i]}) for i in todo], what)
        failed: MeshError | None = None
        for i, ack in zip(todo, acks, strict=True):
            if isinstance(ack, Ack) and ack.seq:
                seqs[i] = ack.seq
            elif isinstance(ack, MeshError):
                failed = failed or ack
        if failed is not None:
            await _ready(link, deadline, failed, what)
            continue
        bad = _first_out_of_order(seqs, after)
        if bad is None:
            return int(seqs[-1] or after)
        # Stored out of order (the drop lost a chunk that later ones overtook): delete those later
        # ones and send them again, under fresh ids since the server remembers the old ones.
        attempt += 1
        for i in range(bad, len(seqs)):
            seq, seqs[i] = seqs[i], None
            ids[i] = f"{ids[i].split('~')[0]}~{attempt}"
            if seq is not None:
                with contextlib.suppress(jse.NotFoundError), translate_nats_errors(what):
                    await link.js.delete_msg(stream, seq)


async def _publish_meta(link: Link, bucket: str, info: StoredObject, msg_id: str, deadline: float) -> None:
    what = f"put {info.name!r}"
    subject = meta_subject(bucket, info.name)
    while True:
        (ack,) = await _send(link, [(subject, info.to_json(), {**_ROLLUP, "Nats-Msg-Id": msg_id})], what)
        if isinstance(ack, Ack):
            return
        await _ready(link, deadline, ack, what)


async def put_object(
    link: Link, bucket: str, name: str, chunks: AsyncIterator[bytes], *, description: str = "",
    metadata: dict[str, str] | None = None, total: int | None = None, progress: Progress | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> StoredObject:
    """Store ``chunks`` (each at most ``chunk_size`` bytes, in order) as object ``name``; replaces an
    older object of that name once the new one is complete. Retries a dropped connection."""
    what = f"put {name!r}"
    nuid = NUID().next().decode()
    subject = chunk_subject(bucket, nuid)
    try:
        old: StoredObject | None = await object_info(link, bucket, name)
    except FileNotFound:
        old = None
    sha, size, count, last = hashlib.sha256(), 0, 0, 0
    ids: list[str] = []
    datas: list[bytes] = []
    try:
        async for data in _with_end(chunks):
            if data is not None:
                sha.update(data)
                ids.append(f"{nuid}.{count + len(datas)}")
                datas.append(data)
            if datas and (len(datas) >= WINDOW or data is None):
                last = await _store_window(link, stream_name(bucket), subject, ids, datas, last, time.monotonic() + RETRY_FOR, what)
                count += len(datas)
                size += sum(map(len, datas))
                ids, datas = [], []
                if progress is not None:
                    progress(size, total)
        info = StoredObject(
            name=name, bucket=bucket, nuid=nuid, size=size, chunks=count, digest=digest_of(sha.digest()),
            mtime=datetime.now(UTC).isoformat().replace("+00:00", "Z"), description=description,
            metadata=dict(metadata or {}), max_chunk_size=chunk_size,
        )
        await _publish_meta(link, bucket, info, f"{nuid}.meta", time.monotonic() + RETRY_FOR)
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the chunks of an object that never got its meta
            await asyncio.shield(_purge(link, bucket, subject))
        raise
    if old is not None and old.nuid and old.nuid != nuid:
        await _purge(link, bucket, chunk_subject(bucket, old.nuid))
    return info


async def _with_end(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes | None]:
    """The chunks, then None (so the caller flushes its last window in the same loop)."""
    async for data in chunks:
        if data:
            yield data
    yield None


# -- get ---------------------------------------------------------------------------------------------
def _reader_config(subject: str, start: int, *, last_per_subject: bool = False) -> jsapi.ConsumerConfig:
    policy = jsapi.DeliverPolicy.BY_START_SEQUENCE if start > 1 else jsapi.DeliverPolicy.ALL
    if last_per_subject:
        policy = jsapi.DeliverPolicy.LAST_PER_SUBJECT
    return jsapi.ConsumerConfig(
        name=f"nxs_obj_{uuid.uuid4().hex[:16]}", ack_policy=jsapi.AckPolicy.NONE, deliver_policy=policy,
        opt_start_seq=start if start > 1 else None, filter_subject=subject, inactive_threshold=30.0,
        mem_storage=True, num_replicas=1,
    )


class _Reader:
    """One ephemeral consumer over a subject: ``open()`` counts what it will deliver, ``take(n)`` pulls."""

    def __init__(self, link: Link, stream: str, config: jsapi.ConsumerConfig, what: str) -> None:
        self._link, self._stream, self._config, self._what = link, stream, config, what
        self._psub: Any = None

    async def open(self) -> int:
        js = self._link.js
        with translate_nats_errors(self._what):
            info = await js.add_consumer(self._stream, self._config)
            self._psub = await js.pull_subscribe_bind(consumer=str(self._config.name), stream=self._stream)
        return int(info.num_pending or 0)

    async def take(self, n: int) -> list[Any]:
        try:
            return list(await self._psub.fetch(n, timeout=ACK_TIMEOUT))
        except Exception as exc:  # translated, never swallowed
            if (ours := mesh_error_for(exc, self._what)) is None:
                raise
            raise ours from exc

    async def close(self) -> None:
        psub, self._psub = self._psub, None
        with contextlib.suppress(Exception):  # done reading; the ephemeral consumer expires anyway
            if psub is not None:
                await psub.unsubscribe()
            await asyncio.wait_for(self._link.js.delete_consumer(self._stream, str(self._config.name)), 2)


async def read_object(
    link: Link, info: StoredObject, *, progress: Progress | None = None
) -> AsyncGenerator[bytes, None]:
    """Yield the object's chunks in order; ``FileCorrupt`` when chunks are missing or size or digest
    differ from the meta (the last check runs after the last chunk). Resumes after a dropped connection."""
    what = f"get {info.name!r}"
    if info.link is not None:
        raise FileError(f"{what}: is a link to {info.link}; links are not supported")
    stream, subject = stream_name(info.bucket), chunk_subject(info.bucket, info.nuid)
    sha, got, count, start = hashlib.sha256(), 0, 0, 1
    deadline = time.monotonic() + RETRY_FOR
    while count < info.chunks:
        reader = _Reader(link, stream, _reader_config(subject, start), what)
        try:
            try:
                pending = await reader.open()
                if pending != info.chunks - count:
                    raise FileCorrupt(f"{what}: incomplete, {count + pending} of {info.chunks} chunks stored")
                while count < info.chunks:
                    msgs = await reader.take(min(READ_BATCH, info.chunks - count))
                    for msg in msgs:
                        data = msg.data
                        sha.update(data)
                        got, count, start = got + len(data), count + 1, msg.metadata.sequence.stream + 1
                        if got > info.size:
                            raise FileCorrupt(f"{what}: more than the {info.size} bytes its meta says")
                        yield data
                    if progress is not None:
                        progress(got, info.size)
                    deadline = time.monotonic() + RETRY_FOR
            except FileError:
                raise
            except MeshError as exc:
                await _ready(link, deadline, exc, what)
        finally:
            await reader.close()
    if got != info.size:
        raise FileCorrupt(f"{what}: {got} bytes stored, its meta says {info.size}")
    if sha.digest() != digest_bytes(info.digest):
        raise FileCorrupt(f"{what}: SHA-256 digest mismatch (stored data is not what was put)")


# -- list, delete --------------------------------------------------------------------------------------
async def list_objects(link: Link, bucket: str, *, deleted: bool = False) -> list[StoredObject]:
    """Every object's current meta, in stream order of their last change."""
    what = f"list {bucket}"
    reader = _Reader(link, stream_name(bucket), _reader_config(f"$O.{bucket}.M.>", 1, last_per_subject=True), what)
    out: list[StoredObject] = []
    try:
        pending = await reader.open()
        while pending > 0:
            msgs = await reader.take(min(256, pending))
            pending -= len(msgs)
            for msg in msgs:
                try:
                    info = StoredObject.from_json(msg.data, what)
                except FileCorrupt as exc:  # a foreign writer's garbage must not hide the other files
                    log.warning("%s: skipping %s: %s", what, msg.subject, exc)
                    continue
                if deleted or not info.deleted:
                    out.append(info)
    finally:
        await reader.close()
    return out


async def delete_object(link: Link, bucket: str, name: str) -> StoredObject:
    """Mark the object deleted (a meta with ``deleted``, as the other clients do) and purge its chunks."""
    info = await object_info(link, bucket, name)
    gone = StoredObject(name=name, bucket=bucket, nuid=info.nuid, size=0, chunks=0, digest="", deleted=True,
                        description=info.description, metadata=info.metadata, max_chunk_size=info.max_chunk_size)
    with translate_nats_errors(f"delete {name!r}"):
        await link.js.publish(meta_subject(bucket, name), gone.to_json(), headers=dict(_ROLLUP))
    await _purge(link, bucket, chunk_subject(bucket, info.nuid))
    return info
