"""What a consumer's handler and owner see of deliveries: the ``Delivery`` a two-argument handler gets,
the counters (``DeliveryStats``), the policy's settings (``PolicySpec``). The policy itself is
``client.delivery``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nxs_mesh.transport import pull
from nxs_mesh.transport.pull import Delivered

__all__ = ["Delivery", "DeliveryStats", "Handler", "PolicySpec", "positional_arity"]

Handler = Callable[..., Awaitable[Any]]


@dataclass
class Delivery:
    """What a two-argument handler gets besides the envelope."""

    subject: str
    stream_seq: int
    deliveries: int
    stored_at: datetime
    _msg: Delivered
    #: The verified signer key ("U...") of the envelope, or None (unsigned, or no trust file).
    signer: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The delivery's headers (e.g. ``Nxs-Grant``)."""
        return dict(self._msg.headers or {})

    @property
    def ack_subject(self) -> str:
        """Where acks for this delivery go (a Doctor may nak it there for a worker that died)."""
        return str(self._msg.reply)

    async def in_progress(self) -> None:
        """Tell the server this message is still being worked on (resets its ack timer)."""
        await pull.in_progress(self._msg)


@dataclass
class DeliveryStats:
    handled: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    invalid: int = 0
    expired: int = 0
    duplicates: int = 0  # redeliveries of handled messages, acked without a handler call
    group_duplicates: int = 0  # of them, those only the group's exactly-once record knew (another member's)
    deferred: int = 0  # exactly-once: left to (or taken over by) another member of the group
    refused: int = 0  # secure mode: failed verification or could not be opened (dead-lettered)
    last_error: str = ""


@dataclass(frozen=True)
class PolicySpec:
    durable: str
    max_deliver: int = 5
    concurrency: int = 1
    ack_wait: float = 30.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    dedup_size: int = 10_000
    dlq_instance: str = "unknown"


def positional_arity(fn: Callable[..., Any], default: int = 1) -> int:
    """How many positional parameters ``fn`` takes (``default`` when it cannot be inspected): handlers
    may take fewer arguments than the mesh could give them."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return default
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
