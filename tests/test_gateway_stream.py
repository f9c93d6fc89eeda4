"""``GET /v1/stream``: Server-Sent Events over real HTTP, replay then live, resumed from Last-Event-ID, and
the feed behind each stream ends with its client (its reader's consumer is gone, no task is left)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_support import Gate, running_gateway, sse_events

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.testing import eventually, unique_id

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def gate(mesh: Mesh, mesh_config: MeshConfig) -> AsyncIterator[Gate]:
    async with running_gateway(mesh_config.replace(instance_id="gw"), sse_ping=1) as g:
        yield g


async def _take(events: AsyncIterator, n: int) -> list:
    return [await asyncio.wait_for(anext(events), 15) for _ in range(n)]


def _content(event) -> object:
    return json.loads(event.data)["envelope"]["payload"]["content"]


async def test_sse_replays_then_follows_and_resumes_after_last_event_id(gate: Gate, mesh: Mesh):
    to = unique_id("n")
    first = [(await mesh.publish("CHAT", f"old {i}", to=to)).seq for i in range(3)]
    params = {"kind": "chat", "instance": to, "since": first[0]}
    async with gate.client.stream("GET", "/v1/stream", params=params) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
        replayed = await _take(events, 3)
        assert [e.id for e in replayed] == [str(s) for s in first] and _content(replayed[0]) == "old 0"
        live = [(await mesh.publish("CHAT", f"new {i}", to=to)).seq for i in range(2)]
        got = await _take(events, 2)
        assert [e.id for e in got] == [str(s) for s in live] and [_content(e) for e in got] == ["new 0", "new 1"]
        await events.aclose()
    # The client was away while one more arrived; it comes back with the last id it saw.
    missed = (await mesh.publish("CHAT", "while away", to=to)).seq
    headers = {"Last-Event-ID": got[0].id}  # as if the last event had not reached it
    async with gate.client.stream("GET", "/v1/stream", params=params, headers=headers) as r:
        events = sse_events(r)
        again = await _take(events, 2)
        assert [int(e.id) for e in again] == [live[1], missed]  # after the id, nothing before it, nothing lost
        after = (await mesh.publish("CHAT", "after", to=to)).seq
        assert [int(e.id) for e in await _take(events, 1)] == [after]
        await events.aclose()


async def test_a_new_stream_with_last_starts_at_the_end(gate: Gate, mesh: Mesh):
    to = unique_id("n")
    seqs = [(await mesh.publish("CHAT", i, to=to)).seq for i in range(4)]
    async with gate.client.stream("GET", "/v1/stream", params={"instance": to, "last": 1}) as r:
        events = sse_events(r)
        assert [int(e.id) for e in await _take(events, 1)] == seqs[-1:]
        await events.aclose()


async def _tail_consumers(mesh: Mesh) -> list[str]:
    return [c.name for c in await mesh.admin.consumers("NXS_CHAT") if c.name.startswith("nxs_tail_")]


async def test_a_feed_ends_with_its_client_and_leaves_nothing_behind(gate: Gate, mesh: Mesh):
    to = unique_id("n")
    await mesh.publish("CHAT", "hello", to=to)
    client = httpx.AsyncClient(base_url=gate.server.url, timeout=10)
    async with client.stream("GET", "/v1/stream", params={"instance": to, "since": 1}) as r:
        events = sse_events(r)
        await _take(events, 1)
        assert gate.gateway.active_feeds == 1 and await _tail_consumers(mesh)
        await events.aclose()
    await client.aclose()  # the connection goes away
    await eventually(lambda: gate.gateway.active_feeds == 0, timeout=10, what="the feed to end")
    await eventually(lambda: _no_tail(mesh), timeout=10, what="the feed's reader consumer to be deleted")
    assert [t.get_name() for t in asyncio.all_tasks() if "sse" in t.get_name()] == []


async def _no_tail(mesh: Mesh) -> bool:
    return await _tail_consumers(mesh) == []


async def test_stopping_the_gateway_ends_open_streams(mesh: Mesh, mesh_config: MeshConfig):
    """Stop ends each stream (the client sees the end) instead of waiting out uvicorn's grace period."""
    to = unique_id("n")
    await mesh.publish("CHAT", "x", to=to)
    async with running_gateway(mesh_config.replace(instance_id="gw")) as g:
        async with g.client.stream("GET", "/v1/stream", params={"instance": to, "since": 1}) as r:
            events = sse_events(r)
            await _take(events, 1)
            stopping = asyncio.ensure_future(g.server.stop())
            with pytest.raises(StopAsyncIteration):  # the stream ends cleanly, no more events
                await asyncio.wait_for(anext(events), 4)  # well inside the 5 s grace uvicorn would wait
            await asyncio.wait_for(stopping, 10)
        assert g.gateway.active_feeds == 0 and g.gateway.state == "closed"


async def test_a_refused_or_failed_read_is_an_http_error_before_the_stream(gate: Gate):
    r = await gate.client.get("/v1/stream", params={"kind": "chat", "instance": "bad.id"})
    assert r.status_code == 400 and r.json()["field"] == "instance", r.text
    r = await gate.client.get("/v1/stream", params={"kind": "chat", "agent": "a>"})
    assert r.status_code == 400 and r.json()["field"] == "agent", r.text
