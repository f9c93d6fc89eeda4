"""The JetStream pull-consumer protocol, written on nats-py core (no ``fetch`` round trip per batch).

One subscription to a deliver inbox and pull requests (``batch``, ``expires``) to it, kept
overlapping while there is a backlog (``PullSession``); deliveries are returned as they arrive,
status messages end their request (408 expired, 404 no messages, 409 and others are trouble). A request lost without an answer (server restart, reconnect,
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

from nats.aio.subscription import Subscription
from nats.js import api as jsapi
from nats.js import errors as jse

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.aio.waiting import Wakeup
from nxs_mesh.transport.inbox import Inbound, direct_subscribe, settle, unsubscribe
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.translate import mesh_error_for, translate_nats_errors
from nxs_mesh.wire.errors import BrokenError

__all__ = [
    "Delivered", "Meta", "PullSession", "PullSpec", "ack", "consumer_config", "in_progress", "meta_of", "nak",
    "status_of", "term",
]

log = logging.getLogger("nxs_mesh.transport.pull")

#: A delivery as the layers above see it: ``.subject``, ``.data``, ``.headers``, ``.reply`` (its ack subject).
Delivered = Inbound

# With messages in hand and the server's count saying more are on their way (a backlog), wait this long
# at most for the rest of the batch, so that priority orders the whole batch.
_BURST_WAIT: Final = 0.05
#: The header of a 408 (request expired) that says how many deliveries its request did not bring.
_PENDING_MSGS: Final = "Nats-Pending-Messages"
#: With a backlog, batches asked for beyond what is in hand (streaming): more makes fewer, larger
#: turns of the loop (cheaper per message) and holds more out of other workers' reach.
_AHEAD: Final = 2
_ACK: Final = b"+ACK"
_ACK_CMD: Final = b" 4\r\n+ACK\r\n"
_ACK_BATCH: Final = 256 * 1024  # bytes waiting for the flusher beyond which acks take nats-py's own path


class Meta(NamedTuple):
    """What the consumer needs from a delivery's ``$JS.ACK`` reply subject, parsed once."""

    stream: str
    stream_seq: int
    num_delivered: int
    stored_ns: int
    num_pending: int


_make_meta = Meta._make


def meta_of(msg: Delivered) -> Meta:
    """Parse the reply subject (v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>;
    v2 adds <domain>.<account hash> after ACK), cheaper than nats-py's ``msg.metadata`` dataclasses."""
    t = (msg.reply or "").split(".")
    n = len(t)
    if n < 9 or t[0] != "$JS" or t[1] != "ACK" or n == 10:
        with translate_nats_errors("delivery metadata"):
            m = msg.nats_metadata()
        return Meta(m.stream, m.sequence.stream, m.num_delivered, int(m.timestamp.timestamp() * 1e9), m.num_pending)
    o = 0 if n == 9 else 2
    # _make is tuple.__new__ itself: a NamedTuple's generated __new__ is a Python call (~0.3 us)
    return _make_meta((t[o + 2], int(t[o + 5]), int(t[o + 4]), int(t[o + 7]), int(t[o + 8])))


async def ack(msg: Delivered) -> None:
    nc = msg._client
    flush = nc._flush_queue
    if flush is not None and not flush.empty() and nc._pending_data_size < _ACK_BATCH and nc.is_connected:
        # A flush is already due this turn (another publish kicked the flusher): join it, as
        # nc.publish would, without its checks (~2 us a message). The reply subject came from the server.
        cmd = b"PUB " + msg.reply.encode() + _ACK_CMD
        nc._pending.append(cmd)
        nc._pending_data_size += len(cmd)
        return
    try:  # a plain try/except: translate_nats_errors' context manager costs ~1 us per message
        await nc.publish(msg.reply, _ACK)
    except Exception as exc:  # translated, never swallowed
        if (ours := mesh_error_for(exc, "ack")) is None:
            raise
        raise ours from exc


async def nak(msg: Delivered, delay: float | None = None) -> None:
    with translate_nats_errors("nak"):
        await settle(msg, b"-NAK", delay)


async def term(msg: Delivered) -> None:
    with translate_nats_errors("term"):
        await settle(msg, b"+TERM")


async def in_progress(msg: Delivered) -> None:
    with translate_nats_errors("in_progress"):
        await settle(msg, b"+WPI")


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


def status_of(msg: Delivered) -> str:
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

    Streaming (``next_batch`` without ``want``): while the server reports a backlog, requests are
    kept overlapping, a new one of ``batch`` sent whenever no more than one batch is still asked for,
    so deliveries never wait on a round trip (as a push consumer's do, but bounded: at most two
    batches are asked for beyond what is in hand). The server hands deliveries round robin over the
    outstanding requests, so only the total still asked for (``_credit``) is counted; each 408 says
    how many its request did not bring. Idle, one long-poll request.

    Bound to one connection: when the link reopens, ``next_batch`` raises ``BrokenError`` and the
    owner starts a new session."""

    def __init__(self, link: Link, spec: PullSpec) -> None:
        self._link, self.spec = link, spec
        self._sub: Subscription | None = None
        self._generation = -1
        self._inbox = ""
        self._nms = ""
        self._buf: collections.deque[Delivered] = collections.deque()
        self._wake = Wakeup()
        # Reply subject -> deadline of each request that may still be live, oldest first (deadlines grow
        # with it). A request used up ends silently: its entry goes when ``_credit`` reaches 0 or it is
        # past its deadline (the server ends every request at its expiry, before that).
        self._live: dict[str, float] = {}
        self._credit = 0  # deliveries the outstanding requests may still bring, together
        self._req_n = 0
        self._last_pending = 0
        self._trouble = ""  # a status that ended a request abnormally (409, 503, ...)
        self._failures = 0
        self.fetching = False  # idle in a long poll: nothing in hand
        self.last_error = ""

    def __repr__(self) -> str:
        return (f"<PullSession {self.spec.stream}/{self.spec.durable} [gen {self._generation}, "
                f"{self._credit} asked, {len(self._buf)} buffered]>")

    async def open(self) -> None:
        """Create or update the durable consumer (idempotent) and subscribe its deliver inbox."""
        spec, nc = self.spec, self._link.nc
        config = consumer_config(spec.durable, spec.filters, ack_wait=spec.ack_wait, batch=spec.batch)
        with translate_nats_errors(f"consumer {spec.durable}"):
            if not await bind_provisioned(self._link, spec.stream, spec.durable, spec.filters):
                await self._link.js.add_consumer(spec.stream, config)
            if self._sub is None:
                self._inbox = nc.new_inbox()
                self._sub = await direct_subscribe(nc, f"{self._inbox}.*", self._on_msg)
                self._generation = self._link.generation
        self._nms = f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}"

    async def close(self) -> None:
        """Unsubscribe and hand back (nak) what arrived but was never taken. Requests still bringing a
        backlog are let finish first: what they deliver after the unsubscribe would wait out ack_wait."""
        if self._sub is not None and self._live and self._last_pending > 0 and self._link.is_connected:
            await self._finish_requests()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone; the server forgets the sub
                await unsubscribe(sub)
        while self._buf:
            msg = self._buf.popleft()
            if msg.reply:
                with contextlib.suppress(Exception):  # unacked anyway: redelivered after ack_wait
                    await nak(msg)

    async def _finish_requests(self) -> None:
        """Collect what the live requests still bring (to nak it) while the backlog lasts; with a
        backlog that is one round trip, and never longer than the last request's deadline."""
        loop = asyncio.get_running_loop()
        end = next(reversed(self._live.values()))
        taken: list[Delivered] = []
        while self._live and self._last_pending > 0 and loop.time() < end:
            taken += [msg for msg, _ in self._take()]
            if self._live and self._last_pending > 0:
                await self._wait(end - loop.time())
        taken += [msg for msg, _ in self._take()]
        self._buf.extend(taken)

    @property
    def durables(self) -> tuple[str, ...]:
        return (self.spec.durable,)

    async def next_batch(self, stopping: asyncio.Event, want: int = 0) -> list[tuple[Delivered, Meta]]:
        """The next deliveries (at least a batch when a backlog is on its way), asking for at most
        ``want`` (0: stream, ``batch`` at a time) when a new request goes out. Empty after a failed or
        expired request (already backed off). Raises ``BrokenError`` once the link was reopened."""
        loop = asyncio.get_running_loop()
        if self._generation != self._link.generation:
            raise BrokenError(f"consumer {self.spec.durable}: the connection was reopened")
        if not self._live:
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
            deadline = next(reversed(self._live.values()))
            self.fetching = True
            try:
                await self._wait(deadline - loop.time())
            finally:
                self.fetching = False
            if not self._buf and loop.time() >= deadline:
                # Neither deliveries nor the server's end-of-request status: the requests were lost
                # (server restart, reconnect, consumer deleted...). Check the consumer, ask again.
                self._live.clear()
                self._credit = 0
                await self._failed("fetch: no answer to the pull request", stopping)
                return []
        msgs = self._take()
        batch = self.spec.batch
        while msgs and len(msgs) < batch and self._credit > 0 and self._last_pending > 0 and not self._trouble:
            # A backlog: the rest of a batch is on its way; take it all, so priority orders it.
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
            if want <= 0 and not stopping.is_set():
                await self._top_up()
        return msgs

    async def _top_up(self) -> None:
        """Ask for more while what is in hand is handled: with a backlog, until more than one batch is
        asked for (so one request is always on its way); idle, one request once the last is used up.
        A failure here is the next turn's to see."""
        batch = self.spec.batch
        with contextlib.suppress(Exception):  # disconnected: next_batch backs off and asks again
            while self._credit <= batch * (_AHEAD - 1) and (self._credit == 0 or self._last_pending > 0):
                await self._pull(batch)

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
        """Ask for ``batch`` more: one pull request, lingering up to ``fetch_timeout`` on the server."""
        self._req_n += 1
        reply = f"{self._inbox}.{self._req_n}"
        expires = max(0.1, self.spec.fetch_timeout)
        now = asyncio.get_running_loop().time()
        live = self._live
        while live:  # forget requests past their deadline: used up, ended, or lost
            oldest = next(iter(live))
            if live[oldest] > now:
                break
            del live[oldest]
        if not live:
            self._credit = 0
        # The server ends an unfulfilled request with a 408 at expiry; silence well past it means it was lost.
        live[reply] = now + expires + max(1.0, expires / 2)
        self._credit += batch
        body = b'{"batch":%d,"expires":%d}' % (batch, int(expires * 1e9))
        await self._link.nc.publish(self._nms, body, reply=reply)

    def _on_msg(self, msg: Delivered) -> None:
        self._buf.append(msg)
        self._wake.set()

    async def _wait(self, timeout: float) -> bool:
        """Wait until something arrives (True) or ``timeout`` passes (False)."""
        if self._buf:
            return True
        await self._wake.wait(timeout)
        return bool(self._buf)

    def _take(self) -> list[tuple[Delivered, Meta]]:
        """Deliveries in the buffer; status messages end their request (408 expired, 409, ...)."""
        out: list[tuple[Delivered, Meta]] = []
        buf, live = self._buf, self._live
        while buf:
            msg = buf.popleft()
            if msg.reply:  # a delivery (its subject is the stored one): it used up one of the credit
                out.append((msg, meta_of(msg)))
                continue
            if msg.subject not in live:
                continue  # a status for a request already forgotten
            headers = msg.headers or {}
            status = headers.get("Status", "")
            if status == "100":
                continue  # heartbeat
            del live[msg.subject]
            left = headers.get(_PENDING_MSGS, "")
            self._credit = max(0, self._credit - int(left)) if left.isdigit() else self._credit
            if not live:
                self._credit = 0
            if status not in ("404", "408"):
                desc = headers.get("Description", "")
                self._trouble = f"pull request answered {status or 'without status'} {desc}".rstrip()
        if out:
            self._last_pending = out[-1][1].num_pending
            self._credit -= len(out)
            if self._credit <= 0:  # every request used up (the server forgets them silently)
                self._credit = 0
                live.clear()
        return out
