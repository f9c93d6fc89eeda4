"""Subscriptions whose messages go from the connection's reader straight to a function, as ``Inbound``
records whose headers are parsed only when someone asks for them.

nats-py builds a ``Msg`` for every message (its headers parsed, ~2 us for one header) and hands it
through an ``asyncio.Queue`` to a task of the subscription's that awaits the callback: a put, a get
and two coroutine calls more (~3 us), and one more turn of the event loop before anyone sees it. The
mesh's consumers only buffer what arrives and wake their loop, and the screening asks of the headers
only whether a sealing or encoding header is there (a look at the raw bytes). So, for the
subscriptions made here, the connection's message hook routes by subscription id to ``on_msg``
before nats-py's own processing; every other subscription takes nats-py's path unchanged.

The hook replaces a private method on the connection object (``Client._process_msg``, which the
protocol parser calls for every MSG/HMSG in nats-py 2.x). Should a nats-py version lack it, the
subscription is a plain callback one, correct and slower; ``is_direct`` says which (a test checks
it on the pinned version). A routed message for a subscription nats-py no longer has (it arrived
after the unsubscribe) is dropped, as nats-py drops it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Inbound", "direct_subscribe", "is_direct", "settle", "unsubscribe"]

_ROUTES: Final = "_nxs_routes"
_UNPARSED: Final[Any] = object()
_HDR_LINE: Final = b"NATS/1.0"


class Inbound:
    """One message as the reader parsed it: ``subject``, ``reply``, ``data``, and ``headers`` (a dict,
    or None) parsed on first use; ``has_header`` looks at the raw bytes without parsing."""

    __slots__ = ("_client", "_headers", "_raw", "data", "reply", "subject")

    def __init__(self, client: Client, subject: str, reply: str, data: bytes, raw_headers: bytes | None,
                 headers: Any = _UNPARSED) -> None:
        self._client, self.subject, self.reply, self.data = client, subject, reply, data
        self._raw, self._headers = raw_headers, headers

    @classmethod
    def of(cls, msg: Msg) -> Inbound:
        """From a message nats-py built (the fallback path): its headers are parsed already."""
        return cls(msg._client, msg.subject, msg.reply, msg.data, None, msg.headers)

    def __repr__(self) -> str:
        return f"<Inbound {self.subject} [{len(self.data)} B, reply {self.reply or '-'}]>"

    @property
    def headers(self) -> dict[str, str] | None:
        if self._headers is _UNPARSED:
            self._headers = _parse_headers(self._raw) if self._raw else None
        parsed: dict[str, str] | None = self._headers
        return parsed

    def has_header(self, name: str) -> bool:
        """Whether header ``name`` may be there (a look at the raw bytes: a name found inside another
        header's value says yes, which only sends the caller down its careful path)."""
        if self._headers is _UNPARSED:
            return self._raw is not None and name.encode() in self._raw
        return self._headers is not None and name in self._headers

    def nats_metadata(self) -> Msg.Metadata:
        """nats-py's parse of the reply subject (for reply forms the mesh's own parse does not know)."""
        return Msg(_client=self._client, reply=self.reply).metadata

    async def publish_reply(self, payload: bytes) -> None:
        await self._client.publish(self.reply, payload)


async def settle(msg: Inbound, kind: bytes, delay: float | None = None) -> None:
    """Publish a JetStream settle (``-NAK``, ``+TERM``, ``+WPI``) on the delivery's reply subject, as
    nats-py's ``Msg`` methods do (a nak's delay in nanoseconds as JSON)."""
    payload = kind if not delay else kind + b" " + json.dumps({"delay": int(delay * 1e9)}).encode()
    await msg.publish_reply(payload)


def _parse_headers(raw: bytes) -> dict[str, str] | None:
    """The header block of an HMSG as nats-py reads it: an inline status (``NATS/1.0 408 Request
    Timeout``) as ``Status`` and ``Description``, then ``Name: Value`` lines."""
    out: dict[str, str] = {}
    rest = raw[len(_HDR_LINE):]
    line, _, rest = rest.partition(b"\r\n")
    if line[:1] == b" ":  # a status message
        status, _, desc = line[1:].partition(b" ")
        if status.strip().isdigit():
            out["Status"] = status.strip().decode()
        if desc.strip():
            out["Description"] = desc.strip().decode()
    out.update(Client._parse_header_lines(rest))
    return out or None


def _routes(nc: Client) -> dict[int, Callable[[Inbound], None]] | None:
    """The connection's routing table, the hook installed on first use (None: this nats-py differs)."""
    routes: dict[int, Callable[[Inbound], None]] | None = nc.__dict__.get(_ROUTES)
    if routes is not None:
        return routes
    original = getattr(nc, "_process_msg", None)
    if original is None or not isinstance(getattr(nc, "_subs", None), dict):
        return None
    table: dict[int, Callable[[Inbound], None]] = {}

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        on_msg = table.get(sid)
        if on_msg is None:
            await original(sid, subject, reply, data, headers)
        elif sid in nc._subs:
            on_msg(Inbound(nc, subject.decode(), reply.decode(), data, headers or None))
        else:
            del table[sid]  # unsubscribed: what still arrives is dropped, as nats-py drops it

    setattr(nc, "_process_msg", process_msg)  # noqa: B010 - replacing the method on this one connection
    setattr(nc, _ROUTES, table)
    return table


async def direct_subscribe(nc: Client, subject: str, on_msg: Callable[[Inbound], None]) -> Subscription:
    """Subscribe ``subject`` with ``on_msg(inbound)`` called synchronously by the connection's reader."""
    routes = _routes(nc)
    if routes is None:
        async def cb(msg: Msg) -> None:
            on_msg(Inbound.of(msg))

        return await nc.subscribe(subject, cb=cb)
    sub = await nc.subscribe(subject)  # no callback: nats-py starts no task for it
    # Nothing can have arrived yet: no one has asked anything of this fresh inbox.
    routes[sub._id] = on_msg
    return sub


async def unsubscribe(sub: Subscription) -> None:
    """End a subscription made here (its route goes with it)."""
    routes = sub._conn.__dict__.get(_ROUTES)
    if routes is not None:
        routes.pop(sub._id, None)
    await sub.unsubscribe()


def is_direct(sub: Subscription) -> bool:
    routes = sub._conn.__dict__.get(_ROUTES)
    return routes is not None and sub._id in routes
