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

import msgspec

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


# Random (v4) message ids, built far faster than uuid.uuid4() (~1.8 us each): 256 at a time from one
# os.urandom call, the version and variant bits set on all of them by one big-int mask, and the
# UUID objects made by msgspec's C decoder from a MessagePack array of 16-byte binaries (list.pop is
# atomic, so threads never share one; a forked child drops its parent's pool).
_POOL: Final = 256
_ITEM: Final = 18  # MessagePack bin 8 of 16 bytes: c4 10 + the UUID's bytes


def _item_pattern(prefix: bytes, version_byte: int, variant_byte: int, rest: int) -> bytes:
    item = bytearray(prefix + bytes([rest]) * 16)
    item[len(prefix) + 6], item[len(prefix) + 8] = version_byte, variant_byte
    return bytes(item) * _POOL


# Keep every bit but the version nibble (byte 6) and the variant's two bits (byte 8); then set them to 4 and 0b10.
_MASK: Final = int.from_bytes(_item_pattern(b"\x00\x00", 0x0F, 0x3F, 0xFF))
_BITS: Final = int.from_bytes(_item_pattern(b"\xc4\x10", 0x40, 0x80, 0x00))
_HEAD: Final = b"\xdc" + _POOL.to_bytes(2)  # MessagePack array 16 of _POOL items
_decode_ids = msgspec.msgpack.Decoder(list[uuid.UUID]).decode
_id_pool: list[uuid.UUID] = []


def _fill() -> None:
    bits = (int.from_bytes(os.urandom(_ITEM * _POOL)) & _MASK) | _BITS
    _id_pool.extend(_decode_ids(_HEAD + bits.to_bytes(_ITEM * _POOL)))


def random_uuid() -> uuid.UUID:
    """A random (v4) UUID, for every message whose id is not derived."""
    try:
        return _id_pool.pop()
    except IndexError:
        _fill()
        return _id_pool.pop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_id_pool.clear)
