"""``GET /v1/stream``: stored and new messages as Server-Sent Events, resumable.

Each event's ``id`` is the message's stream sequence, so a client that reconnects with
``Last-Event-ID`` (browsers' ``EventSource`` do it by themselves) goes on right after the last event
it saw: nothing lost, nothing twice. ``since``/``last`` choose where a fresh stream starts. A failure
after the stream began arrives as an ``event: mesh-error`` and ends the stream.

Ownership: the stream is read by a *feed* task owned by the gateway (``Gateway.feeds``), which hands
records over a small bounded queue (a slow client slows the read, it does not grow memory). When the
client goes away, sse-starlette cancels the response; this module's ``finally`` then cancels the feed
and waits for it under a shield, so the read's own cleanup (deleting its ephemeral consumer) runs to
the end and no task outlives the response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
import msgspec
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from nxs_mesh.client.mesh import Mesh, Record
from nxs_mesh.gateway.inputs import ReplayStart, replay_start
from nxs_mesh.gateway.messages import replay
from nxs_mesh.gateway.outputs import record_bytes
from nxs_mesh.gateway.runtime import Gateway, gateway_of
from nxs_mesh.wire.errors import MeshError

__all__ = ["get_stream"]

_QUEUE = 64  # records read ahead of a slow client
_END = object()


async def _probe(mesh: Mesh, request: Request) -> None:
    """Open and close the same read once, so a refused or missing stream is an HTTP error (403, 503)
    now, while the status can still say so, instead of an event after 200."""
    records = replay(mesh, request, ReplayStart(last=1), follow=False)
    try:
        async for _ in records:
            break
    finally:
        await records.aclose()


async def _feed(mesh: Mesh, request: Request, start: ReplayStart, queue: asyncio.Queue[object]) -> None:
    records = replay(mesh, request, start, follow=True)
    try:
        async for rec in records:
            await queue.put(rec)
    except MeshError as exc:
        await queue.put(exc)
    finally:
        await records.aclose()
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(_END)


def _event(rec: Record) -> ServerSentEvent:
    return ServerSentEvent(data=record_bytes(rec).decode(), id=str(rec.seq))


async def _events(gw: Gateway, mesh: Mesh, who: str, request: Request, start: ReplayStart) -> AsyncIterator[ServerSentEvent]:
    queue: asyncio.Queue[object] = asyncio.Queue(_QUEUE)
    feed = gw.feeds.spawn(f"sse {who} {request.url.query}", _feed(mesh, request, start, queue))
    gw.active_feeds += 1
    try:
        # The feed ends with _END, or, when the queue was full as it ended, by being done: drain, then stop.
        while not (queue.empty() and feed.done()):
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, MeshError):
                body = {"error": str(item), "field": None, "kind": type(item).__name__}
                yield ServerSentEvent(data=msgspec.json.encode(body).decode(), event="mesh-error")
                return
            assert isinstance(item, Record)
            yield _event(item)
    finally:
        with anyio.CancelScope(shield=True):  # the response is being cancelled: finish the feed anyway
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed
        gw.active_feeds -= 1


async def get_stream(request: Request) -> Response:
    gw = gateway_of(request)
    mesh, who = gw.mesh_for(request)
    start = replay_start(request, resume=True)
    await _probe(mesh, request)
    return EventSourceResponse(_events(gw, mesh, who, request, start), ping=gw.options.sse_ping,
                               headers={"Cache-Control": "no-store"})
