"""Deterministic message ids (public contract): the UUID v5 rules that let retries and many
publishers agree on one ``message_id``, hence one ``Nats-Msg-Id``, so the stream stores one copy.

``message_id`` is any RFC 4122 UUID. Ordinary messages use random ones (v4); two kinds are derived,
``uuid5(namespace, name)`` with the name as UTF-8 text and the id in its canonical lowercase form:

=========  ==========================================  ===========================================
kind       namespace                                   name
=========  ==========================================  ===========================================
ALERT      ``0d6f3c1e-2b7a-4f4e-8c0a-6f5b1d2e3a90``      ``alert:<event>:<node>:<epoch>:<seq>``
RESULT     ``6c1f9a52-7d0e-4b8e-9a55-6e1c3c2f6a01``      ``result:<message_id of the request>``
=========  ==========================================  ===========================================

An ALERT's ``epoch`` and ``seq`` are those of the node's last heartbeat before the event (every
doctor heard the same one), so every doctor in the mesh computes the same id and NXS_ALERT stores
one alert. A RESULT's id follows from the COMMAND or TASK it answers, so a re-published result (a
lost ack, a retried completion) is deduplicated. A RESULT reporting a failure may carry a random id.

>>> alert_id("dead", "nxs-node-002", "3f2a9c1b7d4e", 41)
'4c169e1f-3eab-5a89-845a-8aecfd231a4c'
"""

from __future__ import annotations

import os
import uuid
from typing import Final

__all__ = ["ALERT_NAMESPACE", "RESULT_NAMESPACE", "alert_id", "random_uuid", "result_id"]

ALERT_NAMESPACE: Final = uuid.UUID("0d6f3c1e-2b7a-4f4e-8c0a-6f5b1d2e3a90")
RESULT_NAMESPACE: Final = uuid.UUID("6c1f9a52-7d0e-4b8e-9a55-6e1c3c2f6a01")
#: The names hashed, as format strings (also shipped in the schemas' ``x-nxs-message-id``).
ALERT_NAME: Final = "alert:{event}:{node}:{epoch}:{seq}"
RESULT_NAME: Final = "result:{request_id}"


def alert_id(event: str, node: str, epoch: str, seq: int) -> str:
    """The deterministic message id of an alert: equal for every doctor that sees the same event."""
    return str(uuid.uuid5(ALERT_NAMESPACE, ALERT_NAME.format(event=event, node=node, epoch=epoch, seq=seq)))


def result_id(request_id: str) -> str:
    """The RESULT message id for the request (COMMAND or TASK) with ``message_id`` ``request_id``:
    deterministic, so a re-publish is deduplicated."""
    return str(uuid.uuid5(RESULT_NAMESPACE, RESULT_NAME.format(request_id=request_id)))


# Random (v4) message ids, built faster than uuid.uuid4() (~0.5 us instead of ~1.8 us): random bits
# come 256 ids per os.urandom call (list.pop is atomic, so threads never share one; a forked child
# drops its parent's pool), and the UUID is made from its int without re-validating it.
_V4_MASK: Final = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_V4_BITS: Final = (0x8000 << 48) | (0x4000 << 64)
_id_pool: list[int] = []
_new_object = object.__new__
_set_slot = object.__setattr__


def _uuid_from_int(value: int) -> uuid.UUID:
    u = _new_object(uuid.UUID)
    _set_slot(u, "int", value)
    _set_slot(u, "is_safe", uuid.SafeUUID.unknown)
    return u


def random_uuid() -> uuid.UUID:
    """A random (v4) UUID, for every message whose id is not derived."""
    try:
        value = _id_pool.pop()
    except IndexError:
        raw = os.urandom(16 * 256)
        _id_pool.extend((int.from_bytes(raw[i:i + 16]) & _V4_MASK) | _V4_BITS for i in range(0, len(raw), 16))
        value = _id_pool.pop()
    return _make_uuid(value)


try:  # the fast constructor relies on UUID's slots; fall back to the public one if they ever change
    _probe = _uuid_from_int(_V4_BITS | 12345)
    _ok = _probe == uuid.UUID(int=_V4_BITS | 12345) and str(_probe) == str(uuid.UUID(int=_V4_BITS | 12345))
except Exception:  # any surprise from UUID's internals: use the public constructor
    _ok = False
_make_uuid = _uuid_from_int if _ok else (lambda value: uuid.UUID(int=value))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_id_pool.clear)
