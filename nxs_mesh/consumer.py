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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as jsapi

from . import subjects
from .connection import backoff_delay
from .envelope import Envelope, decode
from .errors import ClosedError, EnvelopeError, MeshError, translate_nats_errors

__all__ = ["Abandon", "Consumer", "ConsumerStats", "Delivery", "Handler", "Reject", "Retry"]

log = logging.getLogger("nxs_mesh.consumer")

ENCODING_HEADER: Final = "Nxs-Encoding"


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
    extra: dict[str, Any] = field(default_factory=dict)


class Consumer:
    """A running durable pull consumer. Made by ``Mesh.consume``; stop it with ``stop()``."""

    def __init__(self, nc: Client, js: JetStreamContext, spec: ConsumerSpec, handler: Handler) -> None:
        self._nc, self._js, self.spec, self._handler = nc, js, spec, handler
        self._wants_delivery = _arity(handler) >= 2
        self.stats = ConsumerStats()
        self._acked_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._psub: JetStreamContext.PullSubscription | None = None
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
            except (TimeoutError, asyncio.TimeoutError):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
        self.state = "stopped"

    async def wait(self) -> None:
        """Wait until the consumer stops (for workers that just consume)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._psub is not None
        failures = 0
        while not self._stopping.is_set():
            try:
                self._fetching = True
                try:
                    msgs = await self._psub.fetch(self.spec.batch, timeout=self.spec.fetch_timeout)
                finally:
                    self._fetching = False
                failures = 0
            except asyncio.TimeoutError:
                continue  # nothing to do this round (nats-py's TimeoutError subclasses asyncio's)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Disconnected, reconnecting, consumer deleted by a server restart...: keep going.
                failures += 1
                self.stats.last_error = f"fetch: {exc!r}"
                log.debug("consumer %s fetch failed: %r", self.spec.durable, exc)
                await self._recover(failures)
                continue
            await self._dispatch_batch(msgs)

    async def _recover(self, failures: int) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), backoff_delay(failures, base=0.1, cap=2.0))
        if self._stopping.is_set() or not self._nc.is_connected:
            return
        # A server restart can lose an R1 consumer; re-declare it (idempotent) and re-bind.
        with contextlib.suppress(Exception):
            info = await self._js.consumer_info(self.spec.stream, self.spec.durable)
            if info is not None:
                return
        with contextlib.suppress(Exception):
            old = self._psub
            await self._declare()
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.unsubscribe()

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
            self._psub = await self._js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)

    async def _dispatch_batch(self, msgs: list[Msg]) -> None:
        ready: list[tuple[int, int, Envelope, Msg]] = []
        for msg in msgs:
            item = await self._screen(msg)
            if item is not None:
                ready.append(item)
        # Priority is enforced within what is fetched: higher first, then stream order.
        ready.sort(key=lambda t: (-t[0], t[1]))
        if self.spec.concurrency <= 1:
            for _, _, env, msg in ready:
                await self._handle(env, msg)
            return
        sem = asyncio.Semaphore(self.spec.concurrency)

        async def run(env: Envelope, msg: Msg) -> None:
            async with sem:
                await self._handle(env, msg)

        async with asyncio.TaskGroup() as tg:
            for _, _, env, msg in ready:
                tg.create_task(run(env, msg))

    async def _screen(self, msg: Msg) -> tuple[int, int, Envelope, Msg] | None:
        """Decode and filter one message; returns it ready to handle, or deals with it."""
        meta = msg.metadata
        try:
            env = decode(msg.data, msgpack=(msg.headers or {}).get(ENCODING_HEADER) == "msgpack")
        except EnvelopeError as exc:
            self.stats.invalid += 1
            await self._dead_letter(msg, f"invalid envelope: {exc}", kind="invalid")
            return None
        if env.is_expired(stored_at=meta.timestamp):
            self.stats.expired += 1
            await msg.term()
            return None
        return env.priority, meta.sequence.stream, env, msg

    async def _handle(self, env: Envelope, msg: Msg) -> None:
        meta = msg.metadata
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
                delivery = Delivery(msg.subject, meta.sequence.stream, meta.num_delivered, meta.timestamp, msg)
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
            delay = min(self.spec.backoff_cap, self.spec.backoff_base * 2 ** (meta.num_delivered - 1))
            await self._retry_or_dead(env, msg, delay, f"handler raised {type(exc).__name__}: {exc}")
        else:
            self.stats.handled += 1
            with translate_nats_errors("ack"):
                await msg.ack()
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


def _arity(handler: Handler) -> int:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))

