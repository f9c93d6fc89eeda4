"""The JetStream pull-consumer protocol, written on nats-py core (no ``fetch`` round trip per batch).

One subscription to a deliver inbox, one pull request (``batch``, ``expires``) outstanding at a time;
deliveries are returned as they arrive, status messages end the request (408 expired, 404 no
messages, 409 and others are trouble). A request lost without an answer (server restart, reconnect,
consumer deleted) is noticed by its deadline: the consumer is checked, re-declared if gone, and
asked again with backoff. ``PullSession`` knows nothing of envelopes: ``client.delivery`` does.

Settling a delivery (``ack``, ``nak``, ``term``, ``in_progress``) goes through the functions here, so
nats-py's errors are translated where they enter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass
from typing import Final, NamedTuple

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api as jsapi
from nats.js import errors as jse

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.aio.waiting import Wakeup
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.translate import mesh_error_for, translate_nats_errors
from nxs_mesh.wire.errors import BrokenError

__all__ = [
    "Delivered", "Meta", "PullSession", "PullSpec", "ack", "consumer_config", "in_progress", "meta_of", "nak",
    "status_of", "term",
]

log = logging.getLogger("nxs_mesh.transport.pull")

#: A delivery as the layers above see it: ``.subject``, ``.data``, ``.headers``, ``.reply`` (its ack subject).
Delivered = Msg

# With messages in hand and the server's count saying more are on their way (a backlog), wait this long
# at most for the rest of the batch, so that priority orders the whole batch.
_BURST_WAIT: Final = 0.05


class Meta(NamedTuple):
    """What the consumer needs from a delivery's ``$JS.ACK`` reply subject, parsed once."""

    stream: str
    stream_seq: int
    num_delivered: int
    stored_ns: int
    num_pending: int


_make_meta = Meta._make


def meta_of(msg: Msg) -> Meta:
    """Parse the reply subject (v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>;
    v2 adds <domain>.<account hash> after ACK), cheaper than nats-py's ``msg.metadata`` dataclasses."""
    t = (msg.reply or "").split(".")
    n = len(t)
    if n < 9 or t[0] != "$JS" or t[1] != "ACK" or n == 10:
        with translate_nats_errors("delivery metadata"):
            m = msg.metadata
        return Meta(m.stream, m.sequence.stream, m.num_delivered, int(m.timestamp.timestamp() * 1e9), m.num_pending)
    o = 0 if n == 9 else 2
    # _make is tuple.__new__ itself: a NamedTuple's generated __new__ is a Python call (~0.3 us)
    return _make_meta((t[o + 2], int(t[o + 5]), int(t[o + 4]), int(t[o + 7]), int(t[o + 8])))


async def ack(msg: Msg) -> None:
    try:  # a plain try/except: translate_nats_errors' context manager costs ~1 us per message
        await msg.ack()
    except Exception as exc:  # translated, never swallowed
        if (ours := mesh_error_for(exc, "ack")) is None:
            raise
        raise ours from exc


async def nak(msg: Msg, delay: float | None = None) -> None:
    with translate_nats_errors("nak"):
        await msg.nak(delay=delay)


async def term(msg: Msg) -> None:
    with translate_nats_errors("term"):
        await msg.term()


async def in_progress(msg: Msg) -> None:
    with translate_nats_errors("in_progress"):
        await msg.in_progress()


def consumer_config(durable: str, filters: tuple[str, ...], *, ack_wait: float, batch: int) -> jsapi.ConsumerConfig:
    """The server side of every durable pull consumer of the mesh."""
    return jsapi.ConsumerConfig(
        durable_name=durable,
        ack_policy=jsapi.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        # Unlimited on the server: the delivery policy counts deliveries and dead-letters at its limit,
        # so the last attempt's failure is recorded with its reason instead of silently dropped.
        max_deliver=-1,
        max_ack_pending=max(1000, batch * 4),
        deliver_policy=jsapi.DeliverPolicy.ALL,
        **({"filter_subject": filters[0]} if len(filters) == 1 else {"filter_subjects": list(filters)}),
    )


async def bind_provisioned(link: Link, stream: str, durable: str, filters: tuple[str, ...]) -> bool:
    """In secure mode a node may not create its command consumer (its filters are what keep it from
    reading other nodes' commands), so admin provisions it (``nxs init``): bind to it when it exists
    with these filters. False: not secure, or missing (the create that follows fails clearly)."""
    if not link.config.secure:
        return False
    try:
        info = await link.js.consumer_info(stream, durable)
    except jse.NotFoundError:
        return False
    have = info.config.filter_subjects or ([info.config.filter_subject] if info.config.filter_subject else [])
    return sorted(have) == sorted(filters)


async def provision_consumer(link: Link, stream: str, durable: str, filters: tuple[str, ...], *,
                             ack_wait: float, batch: int) -> None:
    """Create or update a durable pull consumer for someone else (admin provisioning a node's)."""
    with translate_nats_errors(f"consumer {durable}"):
        await link.js.add_consumer(stream, consumer_config(durable, filters, ack_wait=ack_wait, batch=batch))


def status_of(msg: Msg) -> str:
    """The status of a message without a reply subject (100 heartbeat, 404/408 end of request, 409 ...)."""
    return (msg.headers or {}).get("Status", "")


@dataclass(frozen=True)
class PullSpec:
    """The server side of a durable pull consumer."""

    stream: str
    durable: str
    filters: tuple[str, ...]
    ack_wait: float = 30.0
    batch: int = 32
    fetch_timeout: float = 1.0


class PullSession:
    """Pull deliveries of one durable consumer over the link's current connection.

    Bound to one connection: when the link reopens, ``next_batch`` raises ``BrokenError`` and the
    owner starts a new session."""

    def __init__(self, link: Link, spec: PullSpec) -> None:
        self._link, self.spec = link, spec
        self._sub: Subscription | None = None
        self._generation = -1
        self._inbox = ""
        self._nms = ""
        self._buf: collections.deque[Msg] = collections.deque()
        self._wake = Wakeup()
        self._req = ""  # reply subject of the live pull request ("" = none)
        self._credit = 0  # deliveries the live request may still bring
        self._req_n = 0
        self._req_deadline = 0.0
        self._last_pending = 0
        self._trouble = ""  # a status that ended the request abnormally (409, 503, ...)
        self._failures = 0
        self.fetching = False  # idle in a long poll: nothing in hand
        self.last_error = ""

    def __repr__(self) -> str:
        return f"<PullSession {self.spec.stream}/{self.spec.durable} [gen {self._generation}, {len(self._buf)} buffered]>"

    async def open(self) -> None:
        """Create or update the durable consumer (idempotent) and subscribe its deliver inbox."""
        spec, nc = self.spec, self._link.nc
        config = consumer_config(spec.durable, spec.filters, ack_wait=spec.ack_wait, batch=spec.batch)
        with translate_nats_errors(f"consumer {spec.durable}"):
            if not await bind_provisioned(self._link, spec.stream, spec.durable, spec.filters):
                await self._link.js.add_consumer(spec.stream, config)
            if self._sub is None:
                self._inbox = nc.new_inbox()
                self._sub = await nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
                self._generation = self._link.generation
        self._nms = f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}"

    async def close(self) -> None:
        """Unsubscribe and hand back (nak) what arrived but was never taken. A request still bringing
        a backlog is let finish first: what it delivers after the unsubscribe would wait out ack_wait."""
        if self._sub is not None and self._req and self._last_pending > 0 and self._link.is_connected:
            await self._finish_request()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone; the server forgets the sub
                await sub.unsubscribe()
        while self._buf:
            msg = self._buf.popleft()
            if msg.reply:
                with contextlib.suppress(Exception):  # unacked anyway: redelivered after ack_wait
                    await msg.nak()

    async def _finish_request(self) -> None:
        """Collect the live request's deliveries (to nak them) until it is used up or ended by the
        server; with a backlog that is one round trip, and never longer than the request's deadline."""
        loop = asyncio.get_running_loop()
        taken: list[Msg] = []
        while self._req and loop.time() < self._req_deadline:
            taken += [msg for msg, _ in self._take()]
            if self._req:
                await self._wake.wait(self._req_deadline - loop.time())
        taken += [msg for msg, _ in self._take()]
        self._buf.extend(taken)

    @property
    def durables(self) -> tuple[str, ...]:
        return (self.spec.durable,)

    async def next_batch(self, stopping: asyncio.Event, want: int = 0) -> list[tuple[Msg, Meta]]:
        """The next deliveries (a backlog's whole batch when one is on its way), asking for at most
        ``want`` (0: ``batch``) when a new request goes out. Empty after a failed or expired request
        (already backed off). Raises ``BrokenError`` once the link was reopened."""
        loop = asyncio.get_running_loop()
        if self._generation != self._link.generation:
            raise BrokenError(f"consumer {self.spec.durable}: the connection was reopened")
        if not self._req:
            try:
                if not self._link.is_connected:
                    raise ConnectionError("not connected")
                await self._pull(min(want, self.spec.batch) if want > 0 else self.spec.batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - disconnected, reconnecting...: back off, ask again
                await self._failed(f"fetch: {exc!r}", stopping)
                return []
        if not self._buf:
            self.fetching = True
            try:
                await self._wait(self._req_deadline - loop.time())
            finally:
                self.fetching = False
            if not self._buf and loop.time() >= self._req_deadline:
                # Neither deliveries nor the server's end-of-request status: the request was lost
                # (server restart, reconnect, consumer deleted...). Check the consumer, ask again.
                self._req, self._credit = "", 0
                await self._failed("fetch: no answer to the pull request", stopping)
                return []
        msgs = self._take()
        while msgs and self._credit > 0 and self._last_pending > 0 and not self._trouble:
            # A backlog: the rest of this batch is on its way; take it all, so priority orders it.
            if not await self._wait(_BURST_WAIT):
                break
            msgs.extend(self._take())
        if self._trouble:
            trouble, self._trouble = self._trouble, ""
            if not msgs:
                await self._failed(f"fetch: {trouble}", stopping)
            else:
                self.last_error = f"fetch: {trouble}"
        elif msgs:
            self._failures = 0
            if want <= 0 and not self._req and not stopping.is_set():
                await self._prefetch()
        return msgs

    async def _prefetch(self) -> None:
        """The batch in hand used up its request: ask for the next one now, so that it travels while
        this one is handled (a round trip per batch hidden). Only on the default path (``want`` 0),
        which holds at most two batches; a failure here is the next turn's to see."""
        with contextlib.suppress(Exception):  # disconnected: next_batch backs off and asks again
            await self._pull(self.spec.batch)

    async def _failed(self, error: str, stopping: asyncio.Event) -> None:
        self._failures += 1
        self.last_error = error
        log.debug("consumer %s: %s", self.spec.durable, error)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff_delay(self._failures, base=0.1, cap=2.0))
        if stopping.is_set() or not self._link.is_connected:
            return
        if self._generation != self._link.generation:
            return  # next_batch raises BrokenError
        # A server restart can lose an R1 consumer; re-declare it (idempotent). The inbox subscription
        # survives reconnects; the next request goes out on the next turn.
        try:
            with translate_nats_errors(f"consumer {self.spec.durable}"):
                await self._link.js.consumer_info(self.spec.stream, self.spec.durable)
            return
        except Exception as exc:  # noqa: BLE001 - gone or unreachable: try to declare it below
            log.debug("consumer %s check failed: %r", self.spec.durable, exc)
        try:
            await self.open()
        except Exception as exc:  # noqa: BLE001 - the next failure backs off further and tries again
            self.last_error = f"declare: {exc}"

    async def _pull(self, batch: int) -> None:
        """Ask for the next batch: one pull request, lingering up to ``fetch_timeout`` on the server."""
        self._req_n += 1
        self._req = f"{self._inbox}.{self._req_n}"
        self._credit = batch
        expires = max(0.1, self.spec.fetch_timeout)
        # The server ends an unfulfilled request with a 408 at expiry; silence well past it means it was lost.
        self._req_deadline = asyncio.get_running_loop().time() + expires + max(1.0, expires / 2)
        body = b'{"batch":%d,"expires":%d}' % (batch, int(expires * 1e9))
        await self._link.nc.publish(self._nms, body, reply=self._req)

    async def _on_msg(self, msg: Msg) -> None:
        self._buf.append(msg)
        self._wake.set()

    async def _wait(self, timeout: float) -> bool:
        """Wait until something arrives (True) or ``timeout`` passes (False)."""
        if self._buf:
            return True
        await self._wake.wait(timeout)
        return bool(self._buf)

    def _take(self) -> list[tuple[Msg, Meta]]:
        """Deliveries in the buffer; status messages end the live request (408 expired, 409, ...)."""
        out: list[tuple[Msg, Meta]] = []
        buf = self._buf
        while buf:
            msg = buf.popleft()
            if msg.reply:  # a delivery (its subject is the stored one, so count it against the live request)
                out.append((msg, meta_of(msg)))
                if self._credit > 0:
                    self._credit -= 1
                    if self._credit == 0:
                        self._req = ""
                continue
            if msg.subject != self._req or not self._req:
                continue  # a status for an older request
            status = (msg.headers or {}).get("Status", "")
            if status == "100":
                continue  # heartbeat
            self._req, self._credit = "", 0
            if status not in ("404", "408"):
                desc = (msg.headers or {}).get("Description", "")
                self._trouble = f"pull request answered {status or 'without status'} {desc}".rstrip()
        if out:
            self._last_pending = out[-1][1].num_pending
        return out
