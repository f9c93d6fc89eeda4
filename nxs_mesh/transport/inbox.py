"""A subscription whose messages go straight to a function, without nats-py's per-message queue hop.

nats-py hands every message of a callback subscription through an ``asyncio.Queue`` to a task of
its own that awaits the callback: a put, a get and two coroutine calls per message (~3 us), and one
more turn of the event loop before anyone sees it. The consumers of the mesh only buffer what
arrives and wake their loop, which needs neither: ``direct_subscribe`` puts a sink in the queue's
place, so the reader task calls ``on_msg`` as it parses the message.

The sink replaces a private attribute (``Subscription._pending_queue``; nats-py 2.x reads it only
with ``put_nowait``, and ``empty``/``qsize``/``join`` when draining or counting). Should a nats-py
version lack it, the subscription is a plain callback one, correct and slower; ``is_direct`` says
which (a test checks it on the pinned version). The pending-bytes limit is off on a direct
subscription: what is in hand is bounded by what the consumer asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["direct_subscribe", "is_direct"]


class _Sink:
    """Stands where nats-py keeps a subscription's queue: every message goes to ``put`` at once."""

    __slots__ = ("put_nowait",)

    def __init__(self, put: Callable[[Msg], None]) -> None:
        self.put_nowait = put

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def task_done(self) -> None:
        return None

    async def join(self) -> None:
        return None


async def direct_subscribe(nc: Client, subject: str, on_msg: Callable[[Msg], None]) -> Subscription:
    """Subscribe ``subject`` with ``on_msg(msg)`` called synchronously by the connection's reader."""
    if not _has_queue():
        return await nc.subscribe(subject, cb=_as_coroutine(on_msg))
    sub = await nc.subscribe(subject)  # no callback: nats-py starts no task for it
    # Nothing can have arrived yet: the reader has not run since the SUB went out for a fresh inbox.
    sub._pending_queue = _Sink(on_msg)  # type: ignore[assignment]
    sub._pending_bytes_limit = 0
    return sub


def is_direct(sub: Subscription) -> bool:
    return isinstance(getattr(sub, "_pending_queue", None), _Sink)


@functools.cache
def _has_queue() -> bool:
    return "_pending_queue" in vars(Subscription(None))


def _as_coroutine(on_msg: Callable[[Msg], None]) -> Callable[[Msg], Any]:
    async def cb(msg: Msg) -> None:
        on_msg(msg)

    return cb
