"""The delivery loop of a durable consumer: decode, expiry, dedup, priority, dispatch, ack/nak/term, DLQ.

A handler decides the fate of a message by how it ends (faststream's idea):

- returns            -> ack
- raises ``Retry``   -> nak with the given delay (counts as a delivery)
- raises ``Reject``  -> terminate and dead-letter with the reason
- raises anything else -> nak with exponential backoff; after ``max_deliver`` attempts, dead-letter

Malformed input never reaches a handler and never stops the loop: it is dead-lettered with the reason.
Expired messages (stored time + ttl in the past) are never handed to a handler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js import api as jsapi

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.transport.translate import mesh_error_for, translate_nats_errors
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import ENCODING_HEADER
from nxs_mesh.wire.envelope import Envelope, decode
from nxs_mesh.wire.errors import ClosedError, EnvelopeError, MeshError

__all__ = ["Abandon", "Consumer", "ConsumerStats", "Delivery", "Handler", "Reject", "Retry"]

log = logging.getLogger("nxs_mesh.client.consumer")

# With messages in hand and the server's count saying more are on their way (a backlog), wait this long
# at most for the rest of the batch, so that priority orders the whole batch.
_BURST_WAIT: Final = 0.05


class _Meta(NamedTuple):
    """What the consumer needs from a delivery's ``$JS.ACK`` reply subject, parsed once."""

    stream_seq: int
    num_delivered: int
    stored_ns: int
    num_pending: int


def _meta(msg: Msg) -> _Meta:
    """Parse the reply subject (v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>;
    v2 adds <domain>.<account hash> after ACK), cheaper than nats-py's ``msg.metadata`` dataclasses."""
    t = (msg.reply or "").split(".")
    n = len(t)
    if n < 9 or t[0] != "$JS" or t[1] != "ACK" or n == 10:
        m = msg.metadata  # raises nats-py's NotJSMessageError, as before
        return _Meta(m.sequence.stream, m.num_delivered, int(m.timestamp.timestamp() * 1e9), m.num_pending)
    o = 0 if n == 9 else 2
    return _Meta(int(t[o + 5]), int(t[o + 4]), int(t[o + 7]), int(t[o + 8]))


class Retry(Exception):  # noqa: N818 - a control-flow signal, named for what it asks
    """Raise from a handler to have the message redelivered after ``delay`` seconds."""

    def __init__(self, delay: float = 1.0, reason: str = "") -> None:
        self.delay, self.reason = delay, reason
        super().__init__(reason or f"retry in {delay}s")


class Reject(Exception):  # noqa: N818
    """Raise from a handler to terminate the message and send it to the dead-letter stream."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Abandon(Exception):  # noqa: N818
    """Raise from a handler to leave the message alone: no ack, no nak (another worker owns it now)."""


@dataclass
class Delivery:
    """What a two-argument handler gets besides the envelope."""

    subject: str
    stream_seq: int
    deliveries: int
    stored_at: datetime
    _msg: Msg

    @property
    def ack_subject(self) -> str:
        """Where acks for this delivery go (a Doctor may nak it there for a worker that died)."""
        return self._msg.reply

    async def in_progress(self) -> None:
        """Tell the server this message is still being worked on (resets its ack timer)."""
        with translate_nats_errors("in_progress"):
            await self._msg.in_progress()


Handler = Callable[..., Awaitable[Any]]


@dataclass
class ConsumerStats:
    handled: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    invalid: int = 0
    expired: int = 0
    duplicates: int = 0
    last_error: str = ""


@dataclass
class ConsumerSpec:
    stream: str
    durable: str
    filters: list[str]
    ack_wait: float = 30.0
    max_deliver: int = 5
    batch: int = 32
    concurrency: int = 1
    fetch_timeout: float = 1.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    dedup_size: int = 10_000
    dlq_instance: str = "unknown"


class Consumer:
    """A running durable pull consumer. Made by ``Mesh.consume``; stop it with ``stop()``."""

    def __init__(self, nc: Client, js: JetStreamContext, spec: ConsumerSpec, handler: Handler) -> None:
        self._nc, self._js, self.spec, self._handler = nc, js, spec, handler
        self._wants_delivery = positional_arity(handler) >= 2
        self.stats = ConsumerStats()
        self._acked_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # The pull loop: our own subscription to a deliver inbox, one pull request (batch, expires)
        # outstanding at a time; deliveries are handled as they arrive (no fetch round trip per batch).
        self._sub: Subscription | None = None
        self._inbox = ""
        self._nms = ""
        self._buf: collections.deque[Msg] = collections.deque()
        self._wake: asyncio.Future[None] | None = None
        self._req = ""  # reply subject of the live pull request ("" = none)
        self._credit = 0  # deliveries the live request may still bring
        self._req_n = 0
        self._req_deadline = 0.0
        self._last_pending = 0
        self._trouble = ""  # a status that ended the request abnormally (409, 503, ...)
        self._inflight = 0
        self._fetching = False
        self.state = "new"

    def __repr__(self) -> str:
        s = self.stats
        return (f"<Consumer {self.spec.stream}/{self.spec.durable} {self.state.upper()} "
                f"[handled {s.handled}, dead {s.dead_lettered}, inflight {self._inflight}]>")

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> Consumer:
        """Create or update the durable consumer and start delivering; returns once subscribed."""
        if self.state != "new":
            raise ClosedError(f"{self!r} cannot be started twice")
        await self._declare()
        self.state = "running"
        self._task = asyncio.create_task(self._run(), name=f"nxs-consumer-{self.spec.durable}")
        return self

    async def stop(self, grace: float = 10.0) -> None:
        """Stop fetching, let in-flight handlers finish (up to ``grace`` s), then unsubscribe."""
        if self.state in ("stopped", "new"):
            self.state = "stopped"
            return
        self.state = "stopping"
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None and self._fetching:
            # Idle in a long-poll: nothing is in hand, so cancel instead of waiting it out. Anything the
            # server sent meanwhile is unacked and is redelivered; nothing is lost.
            task.cancel()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        await self._return_unhandled()
        self.state = "stopped"

    async def wait(self) -> None:
        """Wait until the consumer stops (for workers that just consume)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._sub is not None
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping.is_set():
            if not self._req:
                try:
                    if not self._nc.is_connected:
                        raise ConnectionError("not connected")
                    await self._pull()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Disconnected, reconnecting...: keep going.
                    failures += 1
                    self.stats.last_error = f"fetch: {exc!r}"
                    log.debug("consumer %s pull failed: %r", self.spec.durable, exc)
                    await self._recover(failures)
                    continue
            if not self._buf:
                self._fetching = True
                try:
                    await self._wait(self._req_deadline - loop.time())
                finally:
                    self._fetching = False
                if not self._buf and loop.time() >= self._req_deadline:
                    # Neither deliveries nor the server's end-of-request status: the request was lost
                    # (server restart, reconnect, consumer deleted...). Check the consumer, ask again.
                    self._req, self._credit = "", 0
                    failures += 1
                    self.stats.last_error = "fetch: no answer to the pull request"
                    await self._recover(failures)
                    continue
            msgs = self._take()
            while msgs and self._credit > 0 and self._last_pending > 0 and not self._trouble:
                # A backlog: the rest of this batch is on its way; take it all, so priority orders it.
                if not await self._wait(_BURST_WAIT):
                    break
                msgs.extend(self._take())
            if self._trouble:
                failures += 1
                self.stats.last_error, self._trouble = f"fetch: {self._trouble}", ""
                log.debug("consumer %s: %s", self.spec.durable, self.stats.last_error)
                if msgs:
                    await self._dispatch_batch(msgs)
                await self._recover(failures)
                continue
            if msgs:
                failures = 0
                await self._dispatch_batch(msgs)

    async def _pull(self) -> None:
        """Ask for the next batch: one pull request, lingering up to ``fetch_timeout`` on the server."""
        self._req_n += 1
        self._req = f"{self._inbox}.{self._req_n}"
        self._credit = self.spec.batch
        expires = max(0.1, self.spec.fetch_timeout)
        # The server ends an unfulfilled request with a 408 at expiry; silence well past it means it was lost.
        self._req_deadline = asyncio.get_running_loop().time() + expires + max(1.0, expires / 2)
        body = b'{"batch":%d,"expires":%d}' % (self.spec.batch, int(expires * 1e9))
        await self._nc.publish(self._nms, body, reply=self._req)

    async def _on_msg(self, msg: Msg) -> None:
        self._buf.append(msg)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _wait(self, timeout: float) -> bool:
        """Wait until something arrives (True) or ``timeout`` passes (False)."""
        if self._buf:
            return True
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        timer = loop.call_later(timeout, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None
        return bool(self._buf)

    def _take(self) -> list[tuple[Msg, _Meta]]:
        """Deliveries in the buffer; status messages end the live request (408 expired, 409, ...)."""
        out: list[tuple[Msg, _Meta]] = []
        buf = self._buf
        while buf:
            msg = buf.popleft()
            if msg.reply:  # a delivery (its subject is the stored one, so count it against the live request)
                out.append((msg, _meta(msg)))
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

    async def _return_unhandled(self) -> None:
        """Deliveries that arrived but were never handed to the handler go back at once (nak)."""
        while self._buf:
            msg = self._buf.popleft()
            if msg.reply:
                with contextlib.suppress(Exception):
                    await msg.nak()

    async def _recover(self, failures: int) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), backoff_delay(failures, base=0.1, cap=2.0))
        if self._stopping.is_set() or not self._nc.is_connected:
            return
        # A server restart can lose an R1 consumer; re-declare it (idempotent). The inbox subscription
        # survives reconnects; the next loop turn sends a new pull request.
        with contextlib.suppress(Exception):
            info = await self._js.consumer_info(self.spec.stream, self.spec.durable)
            if info is not None:
                return
        with contextlib.suppress(Exception):
            await self._declare()

    async def _declare(self) -> None:
        """Create or update the durable consumer (idempotent) and bind a pull subscription to it."""
        spec = self.spec
        config = jsapi.ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=jsapi.AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait,
            # Unlimited on the server: we count deliveries ourselves and dead-letter at our limit,
            # so the last attempt's failure is recorded with its reason instead of silently dropped.
            max_deliver=-1,
            max_ack_pending=max(1000, spec.batch * 4),
            deliver_policy=jsapi.DeliverPolicy.ALL,
            **({"filter_subject": spec.filters[0]} if len(spec.filters) == 1 else {"filter_subjects": spec.filters}),
        )
        with translate_nats_errors(f"consumer {spec.durable}"):
            await self._js.add_consumer(spec.stream, config)
            if self._sub is None:
                self._inbox = self._nc.new_inbox()
                self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        prefix = getattr(self._js, "_prefix", None) or "$JS.API"
        self._nms = f"{prefix}.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}"

    async def _dispatch_batch(self, msgs: list[tuple[Msg, _Meta]]) -> None:
        ready: list[tuple[int, int, Envelope, Msg, _Meta]] = []
        for msg, meta in msgs:
            item = await self._screen(msg, meta)
            if item is not None:
                ready.append(item)
        # Priority is enforced within what is fetched: higher first, then stream order.
        if len(ready) > 1:
            ready.sort(key=_priority_order)
        if self.spec.concurrency <= 1:
            for _, _, env, msg, meta in ready:
                await self._handle(env, msg, meta)
            return
        sem = asyncio.Semaphore(self.spec.concurrency)

        async def run(env: Envelope, msg: Msg, meta: _Meta) -> None:
            async with sem:
                await self._handle(env, msg, meta)

        async with asyncio.TaskGroup() as tg:
            for _, _, env, msg, meta in ready:
                tg.create_task(run(env, msg, meta))

    async def _screen(self, msg: Msg, meta: _Meta) -> tuple[int, int, Envelope, Msg, _Meta] | None:
        """Decode and filter one message; returns it ready to handle, or deals with it."""
        headers = msg.headers
        try:
            env = decode(msg.data, msgpack=headers is not None and headers.get(ENCODING_HEADER) == "msgpack")
        except EnvelopeError as exc:
            self.stats.invalid += 1
            await self._dead_letter(msg, f"invalid envelope: {exc}", kind="invalid")
            return None
        # Expired by stored (server) time + ttl; in integer ns, same rule as Envelope.is_expired(stored_at=).
        if env.ttl and time.time_ns() >= meta.stored_ns + env.ttl * 1_000_000_000:
            self.stats.expired += 1
            await msg.term()
            return None
        return env.priority, meta.stream_seq, env, msg, meta

    async def _handle(self, env: Envelope, msg: Msg, meta: _Meta) -> None:
        mid = env.id  # str(UUID) is not free: once per message
        if mid in self._acked_ids:
            # Already handled and acked once (a redelivery after a lost ack, or a re-publish).
            # Checked here, not when screening, so duplicates within one fetched batch are caught too.
            self.stats.duplicates += 1
            await msg.ack()
            return
        self._inflight += 1
        # The keepalive task starts only when the handler outlasts one interval: most finish sooner, and
        # a timer costs far less per message than a task created and cancelled (consume throughput).
        keepalive: list[asyncio.Task[None]] = []
        timer = asyncio.get_running_loop().call_later(
            self._keepalive_interval, lambda: keepalive.append(asyncio.create_task(self._keepalive(msg)))
        )
        try:
            if self._wants_delivery:
                stored_at = datetime.fromtimestamp(meta.stored_ns / 1_000_000_000.0, UTC)
                delivery = Delivery(msg.subject, meta.stream_seq, meta.num_delivered, stored_at, msg)
                await self._handler(env, delivery)
            else:
                await self._handler(env)
        except Retry as sig:
            self.stats.retried += 1
            await self._retry_or_dead(env, msg, sig.delay, sig.reason or "handler asked to retry")
        except Abandon:
            pass  # fenced: the message belongs to another delivery now; acking or naking would disturb it
        except Reject as sig:
            await self._dead_letter(msg, f"rejected by handler: {sig.reason}", kind=env.message_type)
        except asyncio.CancelledError:
            # Our own shutdown gave up waiting: hand the message back at once, nothing is lost.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            self.stats.retried += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("handler failed on %s (delivery %d): %r", env.id, meta.num_delivered, exc)
            delay = backoff_delay(meta.num_delivered - 1, base=self.spec.backoff_base, cap=self.spec.backoff_cap,
                                  jitter=False)
            await self._retry_or_dead(env, msg, delay, f"handler raised {type(exc).__name__}: {exc}")
        else:
            self.stats.handled += 1
            try:  # a plain try/except: translate_nats_errors' context manager costs ~1 us per message
                await msg.ack()
            except Exception as exc:
                if (ours := mesh_error_for(exc, "ack")) is None:
                    raise
                raise ours from exc
            self.stats.acked += 1
            self._remember(mid)
        finally:
            timer.cancel()
            for task in keepalive:
                task.cancel()
            self._inflight -= 1

    @property
    def _keepalive_interval(self) -> float:
        return max(0.2, self.spec.ack_wait / 3)

    async def _keepalive(self, msg: Msg) -> None:
        """In-progress acks while a handler runs, so a long handler is not redelivered mid-work.
        Started one interval into the handler; acks at once, then every interval."""
        with contextlib.suppress(Exception):
            while True:
                await msg.in_progress()
                await asyncio.sleep(self._keepalive_interval)  # sleep-ok: a timer, not synchronisation

    async def _retry_or_dead(self, env: Envelope, msg: Msg, delay: float, reason: str) -> None:
        if msg.metadata.num_delivered >= self.spec.max_deliver:
            await self._dead_letter(
                msg, f"{reason} (gave up after {msg.metadata.num_delivered} deliveries)", kind=env.message_type
            )
        else:
            await msg.nak(delay=delay)

    def _remember(self, message_id: str) -> None:
        self._acked_ids[message_id] = None
        if len(self._acked_ids) > self.spec.dedup_size:
            self._acked_ids.popitem(last=False)

    async def _dead_letter(self, msg: Msg, reason: str, *, kind: str) -> None:
        """Copy to the DLQ with the reason in headers, then terminate. If the copy fails, nak instead:
        a message is never dropped without a record."""
        meta = msg.metadata
        headers = {
            "Nats-Msg-Id": f"dlq:{meta.stream}:{meta.sequence.stream}",
            "Nxs-Dlq-Reason": reason.replace("\r", " ").replace("\n", " ")[:1000],
            "Nxs-Dlq-Subject": msg.subject,
            "Nxs-Dlq-Stream": meta.stream,
            "Nxs-Dlq-Seq": str(meta.sequence.stream),
            "Nxs-Dlq-Consumer": self.spec.durable,
            "Nxs-Dlq-Deliveries": str(meta.num_delivered),
            "Nxs-Dlq-Time": datetime.now(UTC).isoformat(),
        }
        for key, value in (msg.headers or {}).items():
            if key.startswith("Nxs-") and key not in headers:
                headers[key] = value
        try:
            with translate_nats_errors("dead-letter"):
                await self._js.publish(
                    subjects.dlq(kind, self.spec.dlq_instance), msg.data, headers=headers, timeout=5
                )
        except MeshError as exc:
            log.error("cannot dead-letter %s/%s: %s; will retry", meta.stream, meta.sequence.stream, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
            return
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s/%s: %s", meta.stream, meta.sequence.stream, reason)
        with contextlib.suppress(Exception):
            await msg.term()


def _priority_order(item: tuple[int, int, Envelope, Msg, _Meta]) -> tuple[int, int]:
    return -item[0], item[1]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def positional_arity(fn: Callable[..., Any], default: int = 1) -> int:
    """How many positional parameters ``fn`` takes (``default`` when it cannot be inspected): handlers
    may take fewer arguments than the mesh could give them."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return default
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
