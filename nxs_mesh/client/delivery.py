"""The delivery policy of a consumer: screen, expiry, dedup, priority, dispatch, settle, dead letters.

A handler decides the fate of a message by how it ends (faststream's idea); this module is the one
place that decides what each outcome means:

- returns              -> ack (the message id is remembered first, so a lost ack never runs it twice here)
- raises ``Retry``     -> nak with the given delay (counts as a delivery)
- raises ``Reject``    -> terminate and dead-letter with the reason
- raises ``Abandon``   -> neither ack nor nak (another delivery owns the message now)
- raises anything else -> nak with exponential backoff; after ``max_deliver`` attempts, dead-letter

With an ``OnceGuard`` (``client.exactly_once``) the members of a consumer group share a record of
what was handled, claimed before the handler and marked done before the ack; without it each
consumer instance remembers the ids it acked (``dedup_size``), which a redelivery to another
member does not see.

Every input is settled, whatever its size or shape: anything that goes wrong while screening (not
an envelope, nested too deep for the decoder, a subject that disagrees with the envelope, a bad id)
is dead-lettered with the reason, and the consumer goes on. A dead-letter copy that would not fit
the server's ``max_payload`` stores a truncated copy plus the reason and the original's stream and
sequence. Expired messages (stored time + ttl in the past) are never handed to a handler.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.client.deadletters import dead_letter_headers, fit_payload
from nxs_mesh.client.delivered import Delivery, DeliveryStats, Handler, PolicySpec, positional_arity
from nxs_mesh.client.exactly_once import OnceGuard, Verdict
from nxs_mesh.client.keepalive import KeepAlive
from nxs_mesh.client.security import MessageSecurity, is_sealed
from nxs_mesh.transport import pull
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.pull import Delivered, Meta
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import ENCODING_HEADER, MSGPACK
from nxs_mesh.wire.envelope import Envelope, check_id, decode
from nxs_mesh.wire.errors import Abandon, EnvelopeError, MeshError, Reject, Retry, SealError, SecurityError
from nxs_mesh.wire.sealing import SEALED_HEADER

__all__ = ["Delivery", "DeliveryPolicy", "DeliveryStats", "Handler", "PolicySpec", "Ready", "positional_arity"]

log = logging.getLogger("nxs_mesh.client.delivery")

#: A screened delivery: (priority, stream sequence, envelope, delivery, meta), sortable by the first two.
Ready = tuple[int, int, Envelope, Delivered, Meta]


class DeliveryPolicy:
    """Hands screened envelopes to ``handler`` and settles each delivery by the handler's outcome."""

    def __init__(self, link: Link, spec: PolicySpec, handler: Handler, tasks: Supervisor,
                 once: OnceGuard | None = None, security: MessageSecurity | None = None) -> None:
        self._link, self.spec, self._handler, self._tasks = link, spec, handler, tasks
        self._once = once
        self._security = security if security is not None and security.active else None
        self._signers: dict[int, str] = {}  # stream seq -> verified signer, from screening to the handler
        self._wants_delivery = positional_arity(handler) >= 2
        # Nothing but the handler between screening and the ack: no group record, no security, no Delivery.
        self._plain = once is None and self._security is None and not self._wants_delivery
        self.stats = DeliveryStats()
        self._acked_ids: collections.OrderedDict[int, int] = collections.OrderedDict()  # UUID.int -> stream seq
        self._alive = KeepAlive(max(0.2, spec.ack_wait / 3), tasks)
        self.inflight = 0

    async def dispatch(self, msgs: list[tuple[Delivered, Meta]]) -> None:
        """Screen a batch, then run its envelopes by priority (higher first, then stream order)."""
        ready: list[Ready] = []
        quick = self._quick
        for msg, meta in msgs:
            item = quick(msg, meta) or await self.screen(msg, meta)
            if item is not None:
                ready.append(item)
        if len(ready) > 1:
            ready.sort(key=_priority_order)
        if self.spec.concurrency <= 1:
            if self._plain:
                await self._run_plain(ready)
                return
            for _, _, env, msg, meta in ready:
                await self._handle(env, msg, meta)
            return
        sem = asyncio.Semaphore(self.spec.concurrency)

        async def run(env: Envelope, msg: Delivered, meta: Meta) -> None:
            async with sem:
                await self._handle(env, msg, meta)

        async with asyncio.TaskGroup() as tg:
            for _, _, env, msg, meta in ready:
                tg.create_task(run(env, msg, meta))

    async def handle(self, item: Ready) -> None:
        """Run one screened delivery that may have waited (in a priority window): expired meanwhile, it
        is terminated instead."""
        _, _, env, msg, meta = item
        if env.ttl and _expired(env, meta):
            self.stats.expired += 1
            self._signers.pop(meta.stream_seq, None)
            await pull.term(msg)
            return
        await self._handle(env, msg, meta)

    # -- screening --------------------------------------------------------------------------------------
    def _quick(self, msg: Delivered, meta: Meta) -> Ready | None:
        """``screen`` without a coroutine for the common case; None: ``screen`` settles what is wrong."""
        # The raw header block is looked at, not parsed: most deliveries carry only Nats-Msg-Id.
        if self._security is not None or msg.has_header(SEALED_HEADER):
            return None
        try:
            env = decode(msg.data, msgpack=msg.has_header(ENCODING_HEADER) and _header(msg, ENCODING_HEADER) == MSGPACK)
            _check_addressing(env, msg.subject)
        except Exception:  # noqa: BLE001 - screen() decodes it again and settles it with the reason
            return None
        return None if env.ttl and _expired(env, meta) else (env.priority, meta.stream_seq, env, msg, meta)

    async def screen(self, msg: Delivered, meta: Meta) -> Ready | None:
        """Decode and check one delivery; returns it ready to handle, or settles it here."""
        try:
            headers = msg.headers
            sealed = is_sealed(headers)
            env = decode(msg.data, msgpack=headers is not None and headers.get(ENCODING_HEADER) == MSGPACK,
                         strict_content=not sealed)  # sealed content is checked once opened
            _check_addressing(env, msg.subject)
            if self._security is not None or sealed:
                opened = await self._secure(env, msg, meta)
                if opened is None:
                    return None
                env = opened
        except EnvelopeError as exc:
            await self._invalid(msg, f"invalid envelope: {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 - whatever the input does to the decoder, it is settled here
            await self._invalid(msg, f"undecodable ({type(exc).__name__}: {str(exc)[:200]})")
            return None
        if env.ttl and _expired(env, meta):
            self.stats.expired += 1
            await pull.term(msg)
            return None
        return env.priority, meta.stream_seq, env, msg, meta

    async def _secure(self, env: Envelope, msg: Delivered, meta: Meta) -> Envelope | None:
        """Verify and open ``env`` (``client.security``); None when it was refused and dead-lettered."""
        sec = self._security
        try:
            if sec is None:
                raise SealError("sealed, but this consumer has no seal keys")
            checked = sec.check(env, msg.subject, msg.data, msg.headers)
            env = sec.open(env, msg.headers)
        except SecurityError as exc:
            self.stats.refused += 1
            await self.dead_letter(msg, f"refused: {exc}", kind="refused")
            return None
        if checked.signer is not None:
            if len(self._signers) >= self.spec.dedup_size:
                self._signers.clear()  # bounded: only deliveries in hand belong here
            self._signers[meta.stream_seq] = checked.signer
        return env

    async def _invalid(self, msg: Delivered, reason: str) -> None:
        self.stats.invalid += 1
        await self.dead_letter(msg, reason, kind="invalid")

    # -- handling ---------------------------------------------------------------------------------------
    async def _handle(self, env: Envelope, msg: Delivered, meta: Meta) -> None:
        mid = env.message_id.int  # the key: str(UUID) is ~0.8 us, even hash(UUID) is a Python call
        signer = self._signers.pop(meta.stream_seq, None) if self._signers else None
        if mid in self._acked_ids:
            # Already handled once (a redelivery after a lost ack, or a re-publish). Checked here, not
            # when screening, so duplicates within one fetched batch are caught too.
            first = self._acked_ids[mid]
            if self._security is not None and self._security.secure and first != meta.stream_seq:
                # The same signed message stored again (a capture re-published past the dedup window).
                self.stats.refused += 1
                await self.dead_letter(msg, f"refused: replayed: message_id {env.id} was handled at seq {first}",
                                       kind="refused")
                return
            self.stats.duplicates += 1
            await pull.ack(msg)
            return
        self.inflight += 1
        key = self._alive.started(msg)  # in-progress acks only if the handler outlasts an interval
        try:
            token = 0
            if self._once is None or (token := await self._claim(env, msg, meta)):
                await self._run_handler(env, msg, meta, token, signer)
        finally:
            self._alive.finished(key)
            self.inflight -= 1

    async def _run_plain(self, ready: list[Ready]) -> None:
        """``_handle`` for a screened batch, one at a time, when nothing but the handler runs before the
        ack (``_plain``): two calls a message less. Duplicates and failures take the general path."""
        acked, alive, handler, stats = self._acked_ids, self._alive, self._handler, self.stats
        for _, seq, env, msg, meta in ready:
            mid = env.message_id.int
            if mid in acked:
                await self._handle(env, msg, meta)
                continue
            self.inflight += 1
            key = alive.started(msg)
            try:
                await handler(env)
            except (Exception, asyncio.CancelledError) as exc:
                await self._outcome(exc, env, msg, meta)
                continue
            finally:
                alive.finished(key)
                self.inflight -= 1
            stats.handled += 1
            self._remember(mid, seq)  # before the ack, as in _run_handler
            await pull.ack(msg)
            stats.acked += 1

    async def _run_handler(self, env: Envelope, msg: Delivered, meta: Meta, token: int = 0,
                           signer: str | None = None) -> None:
        try:
            if self._wants_delivery:
                stored_at = datetime.fromtimestamp(meta.stored_ns / 1_000_000_000.0, UTC)
                await self._handler(env, Delivery(msg.subject, meta.stream_seq, meta.num_delivered, stored_at, msg,
                                                  signer))
            else:
                await self._handler(env)
        except (Exception, asyncio.CancelledError) as exc:
            await self._outcome(exc, env, msg, meta, token)
            return
        self.stats.handled += 1
        # Remembered before the ack: if the ack is lost, the redelivery is acked without running again.
        self._remember(env.message_id.int, meta.stream_seq)
        if token and not await self._finish(env, token):
            return  # another member took the message over meanwhile: its delivery settles it
        await pull.ack(msg)  # a failure here (connection gone) ends the loop: its supervisor restarts it
        self.stats.acked += 1

    async def _outcome(self, exc: BaseException, env: Envelope, msg: Delivered, meta: Meta, token: int = 0) -> None:
        """What a handler's exception means for its delivery (the one place that decides it)."""
        try:
            raise exc
        except Retry as sig:
            self.stats.retried += 1
            await self._retry_or_dead(env, msg, meta, sig.delay, sig.reason or "handler asked to retry")
        except Abandon:
            pass  # fenced: the message belongs to another delivery now; acking or naking would disturb it
        except Reject as sig:
            await self.dead_letter(msg, f"rejected by handler: {sig.reason}", kind=env.message_type)
            if token:
                await self._finish(env, token)  # settled for good: a lost term must not run it again
        except asyncio.CancelledError:
            # Our own shutdown gave up waiting: hand the message back at once, nothing is lost.
            await _quietly(pull.nak(msg), "nak on cancel")
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure of a handler means "retry"
            self.stats.retried += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("handler failed on %s (delivery %d): %r", env.id, meta.num_delivered, exc)
            delay = backoff_delay(meta.num_delivered - 1, base=self.spec.backoff_base, cap=self.spec.backoff_cap,
                                  jitter=False)
            await self._retry_or_dead(env, msg, meta, delay, f"handler raised {type(exc).__name__}: {exc}")

    # -- exactly once (a shared record per consumer group) -------------------------------------------------
    async def _claim(self, env: Envelope, msg: Delivered, meta: Meta) -> int:
        """Claim the message in the group's record: the token when the handler may run, else 0 (settled)."""
        assert self._once is not None
        try:
            verdict, token = await self._once.begin(env.id, meta)
        except MeshError as exc:
            # No record to consult: running unguarded could run it twice, so hand it back for later.
            self.stats.last_error = f"exactly-once claim: {exc}"
            log.warning("cannot claim %s (%s); retrying it later", env.id, exc)
            await _quietly(pull.nak(msg, self._keepalive_interval), "nak after a failed claim")
            return 0
        if verdict is Verdict.RUN:
            return token
        if verdict is Verdict.DONE:
            self.stats.duplicates += 1
            self.stats.group_duplicates += 1
            self._remember(env.message_id.int, meta.stream_seq)
            await pull.ack(msg)
        else:
            self.stats.deferred += 1
            if verdict is Verdict.WAIT:  # another stored copy is being handled: look again later
                await _quietly(pull.nak(msg, self.spec.ack_wait), "nak a copy in progress")
        return 0

    async def _finish(self, env: Envelope, token: int) -> bool:
        """Mark the message handled in the group's record; False when another member took it over."""
        assert self._once is not None
        try:
            if await self._once.finish(env.id, token):
                return True
        except MeshError as exc:
            # The handler ran: acking is the lesser evil (not acking makes a redelivery certain).
            self.stats.last_error = f"exactly-once done: {exc}"
            log.error("cannot record %s as handled (%s); acking it anyway", env.id, exc)
            return True
        self.stats.deferred += 1
        log.warning("message %s was taken over by another member while its handler ran", env.id)
        return False

    @property
    def _keepalive_interval(self) -> float:
        return self._alive.interval

    async def _retry_or_dead(self, env: Envelope, msg: Delivered, meta: Meta, delay: float, reason: str) -> None:
        if meta.num_delivered >= self.spec.max_deliver:
            await self.dead_letter(msg, f"{reason} (gave up after {meta.num_delivered} deliveries)",
                                   kind=env.message_type)
        else:
            await pull.nak(msg, delay)

    def _remember(self, message_id: int, seq: int) -> None:
        self._acked_ids[message_id] = seq
        if len(self._acked_ids) > self.spec.dedup_size:
            self._acked_ids.popitem(last=False)

    # -- dead letters -------------------------------------------------------------------------------------
    async def dead_letter(self, msg: Delivered, reason: str, *, kind: str) -> None:
        """Copy to the DLQ with the reason in headers, then terminate. If the copy fails, nak instead:
        a message is never dropped without a record."""
        meta = pull.meta_of(msg)
        headers = dead_letter_headers(msg, meta, reason, self.spec.durable)
        data = fit_payload(bytes(msg.data), headers, self._link.server_info().max_payload)
        if len(data) < len(msg.data):
            headers["Nxs-Dlq-Truncated"] = f"{len(msg.data)} bytes stored as {len(data)}"
        try:
            await self._link.publisher.publish(subjects.dlq(kind, self.spec.dlq_instance), data, headers, 5.0)
        except MeshError as exc:
            log.error("cannot dead-letter %s/%s: %s; will retry", meta.stream, meta.stream_seq, exc)
            await _quietly(pull.nak(msg, 1.0), "nak after a failed dead letter")
            return
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s/%s: %s", meta.stream, meta.stream_seq, reason)
        await _quietly(pull.term(msg), "term after dead letter")


def _check_addressing(env: Envelope, subject: str) -> None:
    """The subject a message was stored under must be the one its envelope says (DESIGN.md section 4),
    and every id the mesh later uses as a subject token must be one."""
    if isinstance(env.correlation_id, str):
        check_id(env.correlation_id, "correlation_id")
    expected = subjects.for_envelope(env)
    if subject != expected:
        raise EnvelopeError(f"stored on {subject!r} but the envelope belongs on {expected!r}", "subject")


def _header(msg: Delivered, name: str) -> str | None:
    headers = msg.headers
    return None if headers is None else headers.get(name)


def _expired(env: Envelope, meta: Meta) -> bool:  # stored (server) time + ttl, as Envelope.is_expired(stored_at=)
    return time.time_ns() >= meta.stored_ns + env.ttl * 1_000_000_000


def _priority_order(item: Ready) -> tuple[int, int]:
    return -item[0], item[1]


async def _quietly(op: Awaitable[None], what: str) -> None:
    """Settle best effort: if the connection is gone the server redelivers after ack_wait anyway."""
    try:
        await op
    except MeshError as exc:
        log.debug("%s failed: %s", what, exc)
