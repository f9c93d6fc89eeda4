"""The strong anchors, written directly on nats-py core: what a careful hand-written loop does.

- ``lean_publish``: JetStream publishes as core publishes with a reply subject under one wildcard
  inbox subscription, a bounded window of outstanding acks (the same bound as the mesh's publisher),
  each ack decoded and checked; ``window=1`` is a synchronous publish.
- ``lean_pull``: a durable pull consumer driven by hand: its own inbox, ``$JS.API.CONSUMER.MSG.NEXT``
  requests of ``batch``, the next one sent as soon as the last delivery of the current one arrives,
  a ``+ACK`` published per delivery from the subscription callback.
- ``push_consume``: a plain durable push consumer (``js.subscribe`` with a callback and explicit ack),
  the fastest peer consumer measured on this machine.
- ``core_request``: core NATS request/reply (``nc.request`` answered by a subscription's ``respond``),
  no JetStream: the floor of a round trip between two clients.

No envelope work at all: the bytes are the mesh's wire bytes of the same size, so mesh / lean is the
whole cost of the mesh layer over the protocol itself.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.js import api as jsapi

__all__ = ["LeanPublisher", "core_request", "lean_pull", "push_consume"]

STREAM = "NXS_CHAT"


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int | None = None
    error: dict[str, object] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class LeanPublisher:
    """JetStream publish on core NATS: own reply inbox, at most ``window`` acks outstanding."""

    def __init__(self, nc: Client, window: int = 4096) -> None:
        self._nc, self.window = nc, window
        self._prefix = nc.new_inbox() + "."
        self._plen = len(self._prefix)
        self._outstanding = 0
        self._acked = 0
        self._errors = 0
        self._room: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._sub: object = None

    async def start(self) -> LeanPublisher:
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
        return self

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()  # type: ignore[attr-defined]
            self._sub = None

    async def _on_ack(self, msg: Msg) -> None:
        try:
            ack = _decode_ack(msg.data)
            ok = ack.error is None and ack.seq is not None
        except msgspec.DecodeError:
            ok = False
        self._acked += 1
        self._errors += not ok
        self._outstanding -= 1
        room = self._room
        if room is not None and self._outstanding < self.window and not room.done():
            room.set_result(None)
        done = self._done
        if done is not None and not self._outstanding and not done.done():
            done.set_result(None)

    async def publish(self, subject: str, data: bytes, n: int, timeout: float = 30.0) -> None:
        """Publish ``data`` ``n`` times (a fresh ``Nats-Msg-Id`` each), then wait for every ack."""
        loop, nc, prefix = asyncio.get_running_loop(), self._nc, self._prefix
        ids = uuid.uuid4().hex
        self._errors = 0
        for k in range(n):
            if self._outstanding >= self.window:
                self._room = loop.create_future()
                await asyncio.wait_for(self._room, timeout)
            self._outstanding += 1
            await nc.publish(subject, data, f"{prefix}{k}", {"Nats-Msg-Id": f"{ids}{k}"})
        if self._outstanding:
            self._done = loop.create_future()
            await asyncio.wait_for(self._done, timeout)
            self._done = None
        if self._errors:
            raise RuntimeError(f"lean publish: {self._errors} of {n} acks were errors")


async def lean_pull(nc: Client, subject: str, durable: str, n: int, batch: int, timeout: float) -> None:
    """Consume ``n`` stored messages on ``subject`` with a hand-driven pull consumer (time it outside)."""
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    inbox = nc.new_inbox()
    nms = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}"
    body = b'{"batch":%d,"expires":%d}' % (batch, 5 * 10**9)
    got = credit = 0
    publish = nc.publish

    async def on_msg(msg: Msg) -> None:
        nonlocal got, credit
        if msg.reply:
            await publish(msg.reply, b"+ACK")
            got += 1
            credit -= 1
            if got >= n:
                if not done.done():
                    done.set_result(None)
            elif credit == 0:
                credit = batch
                await publish(nms, body, reply=inbox)
        elif got < n:  # 408/404: the request ended; ask again
            credit = batch
            await publish(nms, body, reply=inbox)

    await js.add_consumer(STREAM, _consumer(durable, subject, batch))
    sub = await nc.subscribe(inbox, cb=on_msg)
    credit = batch
    await publish(nms, body, reply=inbox)
    await _until(done, sub, timeout)


async def push_consume(nc: Client, subject: str, durable: str, n: int, batch: int, timeout: float) -> None:
    """Consume ``n`` stored messages with a plain durable push consumer (time it outside)."""
    js = nc.jetstream()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    counter = itertools.count(1)

    async def on_msg(msg: Msg) -> None:
        await msg.ack()
        if next(counter) == n and not done.done():
            done.set_result(None)

    sub = await js.subscribe(subject, durable=durable, stream=STREAM, cb=on_msg, manual_ack=True,
                             config=jsapi.ConsumerConfig(ack_policy=jsapi.AckPolicy.EXPLICIT,
                                                         max_ack_pending=max(1000, batch * 4)))
    await _until(done, sub, timeout)


async def _until(done: asyncio.Future[None], sub: Subscription, timeout: float) -> None:
    """Wait for the last message (``timeout`` at most), then drop the subscription."""
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        await sub.unsubscribe()


def _consumer(durable: str, subject: str, batch: int) -> jsapi.ConsumerConfig:
    # The same server side as the mesh's durable pull consumers (transport.pull.consumer_config).
    return jsapi.ConsumerConfig(durable_name=durable, ack_policy=jsapi.AckPolicy.EXPLICIT, filter_subject=subject,
                                max_ack_pending=max(1000, batch * 4), deliver_policy=jsapi.DeliverPolicy.ALL)


async def core_request(client: Client, server: Client, payload: bytes, n: int, *, warmup: int = 0) -> list[float]:
    """Round trips (seconds) of ``n`` core requests from ``client`` answered by ``server`` with the payload."""
    subject = f"bench.core.{uuid.uuid4().hex}"

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    sub = await server.subscribe(subject, cb=echo)
    out: list[float] = []
    try:
        await _interest(client, server, subject)
        for i in range(warmup + n):
            t0 = time.perf_counter()
            await client.request(subject, payload, timeout=10)
            if i >= warmup:
                out.append(time.perf_counter() - t0)
    finally:
        await sub.unsubscribe()
    return out


async def _interest(client: Client, server: Client, subject: str, attempts: int = 50) -> None:
    """Return once a request on ``subject`` is answered: nats-py's flush may return on an earlier PONG,
    before the server has the subscription (a request then meets "no responders")."""
    for _ in range(attempts - 1):
        await server.flush()
        try:
            await client.request(subject, b"", timeout=1)
            return
        except NoRespondersError:
            continue
    await client.request(subject, b"", timeout=1)
