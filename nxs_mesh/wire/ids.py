"""Deterministic message ids (UUID v5) for messages that several senders, or retries, may publish:
the same event gets the same id, so ``Nats-Msg-Id`` deduplicates it (DESIGN.md section 3).

    RESULT of task or command T:   uuid5(6c1f9a52-7d0e-4b8e-9a55-6e1c3c2f6a01, "result:" + T)
    ALERT:                         uuid5(0d6f3c1e-2b7a-4f4e-8c0a-6f5b1d2e3a90, "alert:<event>:<node>:<epoch>:<seq>")
"""

from __future__ import annotations

import uuid
from typing import Final

__all__ = ["alert_id", "result_id"]

_RESULT_NS: Final = uuid.UUID("6c1f9a52-7d0e-4b8e-9a55-6e1c3c2f6a01")
_ALERT_NS: Final = uuid.UUID("0d6f3c1e-2b7a-4f4e-8c0a-6f5b1d2e3a90")


def result_id(request_id: str) -> str:
    """The RESULT message id answering request ``request_id`` (a task or a command)."""
    return str(uuid.uuid5(_RESULT_NS, f"result:{request_id}"))


def alert_id(event: str, node: str, epoch: str, seq: int) -> str:
    """The id of an alert: equal for every doctor that sees the same event of the same incarnation."""
    return str(uuid.uuid5(_ALERT_NS, f"alert:{event}:{node}:{epoch}:{seq}"))
