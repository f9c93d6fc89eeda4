"""A lean JetStream publisher: the mesh's publish path without nats-py's per-message request machinery.

A JetStream publish is a core publish with a reply subject; the stream answers there with a JSON ack.
nats-py's ``js.publish`` goes through ``nc.request`` (a NUID and ``token_hex`` per message, a done
callback, ``asyncio.wait_for``, ``json.loads`` + ``PubAck.from_response``) and ``js.publish_async``
adds a semaphore ``wait_for`` and a future per message. Here:

- one wildcard subscription ``<inbox>.<nuid>.*`` per publisher (under the config's inbox prefix, so
  per-node permissions hold; the NUID keeps two clients of one node apart); nats-py re-subscribes it
  after a reconnect;
- a single publish: a counter token, one future, one ``loop.call_later`` timer (no ``wait_for``);
- a batch: tokens ``<batch>-<index>``, the replies kept in a list, one completion future, at most
  ``max_in_flight`` unacknowledged, and a stall watchdog (no acknowledgement for ``timeout``);
- acks decoded by a ``msgspec`` struct; status replies (503: no stream answers the subject) and API
  errors in the ack become the mesh errors ``errors.mesh_error_for`` gives for nats-py's exceptions,
  so callers see exactly what they saw before (``JetStreamUnavailable``, ``StreamError``,
  ``MeshTimeout`` with the same text).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any, Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from nxs_mesh.transport.denials import Denials
from nxs_mesh.transport.frames import Frames
from nxs_mesh.transport.translate import mesh_error_for
from nxs_mesh.wire.errors import ClosedError, MeshError, MeshTimeout, PublishError, StreamError

__all__ = ["MAX_IN_FLIGHT", "Ack", "JsPublisher"]

_STATUS: Final = "Status"
_NO_RESPONDERS: Final = "503"
#: Unacknowledged publishes of one batch at most (the bench's lean publisher uses the same bound).
MAX_IN_FLIGHT: Final = 4096
# A batch yields to the loop this often: nats-py sends nothing until its flusher task runs.
_YIELD_EVERY: Final = 256


class Ack(msgspec.Struct, gc=False):  # gc=False: one per message of a batch, never part of a cycle
    """A JetStream publish acknowledgement (``{"stream": .., "seq": .., "duplicate": ..}`` or ``{"error": ..}``)."""

    stream: str = ""
    seq: int | None = None
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(Ack).decode


def ack_of(msg: Msg, what: str) -> Ack | MeshError:
    """The ack in a reply, or the mesh error for it (the same errors nats-py's publish would map to)."""
    if msg.headers:  # a status reply: the server answered for the (absent) stream
        status = msg.headers.get(_STATUS)
        if status == _NO_RESPONDERS:
            from nats.js.errors import NoStreamResponseError  # the rare path: keep the text identical

            return _mapped(NoStreamResponseError(), what)
        if not msg.data:
            return PublishError(f"{what}: unexpected reply status {status}")
    try:
        ack = _decode_ack(msg.data)
    except msgspec.DecodeError:
        return PublishError(f"{what}: malformed acknowledgement {msg.data[:100]!r}")
    if ack.error is None:
        return ack
    from nats.js.errors import APIError

    try:
        APIError.from_error(ack.error)  # raises the typed error (ServiceUnavailable, NotFound, ...)
    except Exception as exc:  # noqa: BLE001 - mapped below
        return mesh_error_for(exc, what) or StreamError(f"{what}: {ack.error}")
    return StreamError(f"{what}: {ack.error}")


def _acks(replies: list[Msg | None], what: str) -> list[Ack | MeshError]:
    """One ack or mesh error per reply of a finished batch, in order."""
    out: list[Ack | MeshError] = []
    for msg in replies:
        assert msg is not None
        if msg.headers is None:  # the common case, inlined
            try:
                ack = _decode_ack(msg.data)
                if ack.error is None:
                    out.append(ack)
                    continue
            except msgspec.DecodeError:
                pass
        out.append(ack_of(msg, what))
    return out


def _mapped(exc: Exception, what: str) -> MeshError:
    ours = mesh_error_for(exc, what)
    assert ours is not None
    return ours


def _expire(fut: asyncio.Future[Msg]) -> None:
    if not fut.done():
        from nats.errors import TimeoutError as NatsTimeout

        fut.set_exception(NatsTimeout())  # the waiter maps it as before: MeshTimeout("<what>: timed out")


class _Batch:
    """One pipelined batch: replies by index, a completion future and the in-flight bound."""

    __slots__ = ("done", "low", "outstanding", "progress", "replies", "room", "sending")

    def __init__(self, loop: asyncio.AbstractEventLoop, max_in_flight: int) -> None:
        self.replies: list[Msg | None] = []
        self.outstanding = 0
        self.progress = 0  # acks received: the stall watchdog looks at it
        self.sending = True
        self.done: asyncio.Future[None] = loop.create_future()
        self.room: asyncio.Future[None] | None = None  # set while the sender waits for the bound
        self.low = max_in_flight * 3 // 4  # resume sending at this many in flight (not at every ack)

    def on_reply(self, index: int, msg: Msg) -> None:
        if self.replies[index] is not None:
            return
        self.replies[index] = msg
        self.outstanding -= 1
        self.progress += 1
        room = self.room
        if room is not None and self.outstanding <= self.low:
            self.room = None
            if not room.done():
                room.set_result(None)
        if not self.outstanding and not self.sending and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        for fut in (self.room, self.done):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()  # the sender may not be awaiting this one: no "never retrieved" warning
        self.room = None


class JsPublisher:
    """Publishes to JetStream over one connection; ``start()`` once connected, ``close()`` before closing it."""

    def __init__(self, nc: Client, *, max_in_flight: int = MAX_IN_FLIGHT, denials: Denials | None = None) -> None:
        self._nc = nc
        self.denials = denials
        self._loop = asyncio.get_running_loop()
        self._prefix = nc.new_inbox() + "."  # <inbox prefix>.<nuid>.
        self._plen = len(self._prefix)
        self._tokens = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[Msg]] = {}
        self._batches: dict[str, _Batch] = {}
        self._sub: Any = None
        self._closed = False
        self.max_in_flight = max_in_flight
        self._frames = Frames(nc)  # a batch's frames go straight to nats-py's buffer (transport.frames)

    def __repr__(self) -> str:
        return f"<JsPublisher {self._prefix}* [{len(self._waiters)} waiting, {len(self._batches)} batches]>"

    @property
    def reply_prefix(self) -> str:
        return self._prefix

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)

    async def close(self) -> None:
        """Fail whatever waits with ``ClosedError`` and drop the subscription (idempotent)."""
        if self._closed:
            return
        self._closed = True
        exc = ClosedError("this Mesh is closed")
        waiters, self._waiters = self._waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_exception(exc)
        batches, self._batches = self._batches, {}
        for batch in batches.values():
            batch.fail(exc)
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - closing: the connection goes next anyway
                pass

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[self._plen:]
        dash = token.find("-")
        if dash < 0:
            fut = self._waiters.get(token)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        else:
            batch = self._batches.get(token[:dash])
            if batch is not None:
                try:
                    batch.on_reply(int(token[dash + 1:]), msg)
                except (ValueError, IndexError):  # not a reply of ours (anyone may publish to an inbox)
                    pass

    async def publish(self, subject: str, data: bytes, headers: dict[str, str], timeout: float) -> Ack:
        """Publish and wait for the ack; raises the mesh error (``MeshTimeout`` after ``timeout`` s)."""
        if self._closed:
            raise ClosedError("this Mesh is closed")
        token = str(next(self._tokens))
        fut = self._loop.create_future()
        self._waiters[token] = fut
        timer = self._loop.call_later(timeout, _expire, fut)
        try:
            await self._nc.publish(subject, data, self._prefix + token, headers)
            msg = await fut
        except MeshError:
            raise
        except Exception as exc:  # translated, never swallowed
            if (ours := mesh_error_for(exc, f"publish to {subject}")) is None:
                raise
            if isinstance(ours, MeshTimeout) and self.denials is not None:
                ours = self.denials.refused(subject) or ours  # no ack because the server refused it
            raise ours from exc
        finally:
            timer.cancel()
            self._waiters.pop(token, None)
        ack = ack_of(msg, f"publish to {subject}")
        if isinstance(ack, MeshError):
            raise ack
        return ack

    async def publish_batch(
        self, items: Iterable[tuple[str, bytes, dict[str, str]]], timeout: float, what: str = "publish"
    ) -> list[Ack | MeshError]:
        """Publish ``items`` (subject, data, headers) pipelined; one ack or mesh error per item, in order.

        Raises ``MeshTimeout`` when no ack arrives for ``timeout`` s while some are outstanding (or a
        send blocks that long), ``ClosedError`` on ``close()``; an error raised by ``items`` propagates.
        Nothing of the batch is left registered afterwards: late acks are ignored."""
        if self._closed:
            raise ClosedError("this Mesh is closed")
        loop, bound = self._loop, self.max_in_flight
        bid = str(next(self._tokens))
        batch = _Batch(loop, bound)
        self._batches[bid] = batch
        prefix = f"{self._prefix}{bid}-"
        replies = batch.replies
        # The watchdog: asyncio.timeout interrupts whatever the sender awaits (a blocked send included);
        # a timer every timeout/4 pushes it back while acks still arrive, so a steady stream never trips.
        seen = -1
        timer: asyncio.TimerHandle

        def check() -> None:
            nonlocal seen, timer
            if batch.progress != seen:
                seen = batch.progress
                watchdog.reschedule(loop.time() + timeout)
            timer = loop.call_later(timeout / 4, check)

        timer = loop.call_later(timeout / 4, check)
        try:
            async with asyncio.timeout(loop.time() + timeout) as watchdog:
                await self._send(items, batch, prefix)
                if batch.outstanding:
                    await batch.done
        except TimeoutError:
            raise MeshTimeout(f"{what}: timed out") from None
        except MeshError:
            raise
        except Exception as exc:  # translated, never swallowed
            if (ours := mesh_error_for(exc, what)) is None:
                raise
            raise ours from exc
        finally:
            timer.cancel()
            self._batches.pop(bid, None)
            if self._frames.msgs_out:  # an error mid-batch: what was appended still goes out, and is counted
                await self._frames.kick()
        return _acks(replies, what)

    async def _send(self, items: Iterable[tuple[str, bytes, dict[str, str]]], batch: _Batch, prefix: str) -> None:
        """The sending half of a batch: frames into nats-py's buffer (``transport.frames``), at most
        ``max_in_flight`` unacknowledged, the flusher kicked and the loop given a turn every chunk."""
        loop, nc, frames, bound, replies = self._loop, self._nc, self._frames, self.max_in_flight, batch.replies
        index = 0
        room = frames.max_payload()  # refreshed after every wait: the connection may change meanwhile
        for subject, data, headers in items:
            if batch.outstanding >= bound:
                await frames.kick()
                batch.room = loop.create_future()
                await batch.room
                room = frames.max_payload()
            replies.append(None)
            batch.outstanding += 1
            if len(data) <= room:
                if frames.add(subject, f"{prefix}{index}", data, headers):
                    await frames.kick(force=True)  # past nats-py's pending limit: write before going on
            else:  # nats-py buffers while reconnecting, or raises what it raises (max_payload, closed)
                await nc.publish(subject, data, f"{prefix}{index}", headers)
            index += 1
            if not index % _YIELD_EVERY:
                await frames.kick()
                await asyncio.sleep(0)  # sleep-ok: a yield, so the flusher sends and acks are read meanwhile
                room = frames.max_payload()
        batch.sending = False
        await frames.kick()
