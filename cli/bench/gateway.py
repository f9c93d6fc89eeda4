"""The HTTP gateway against the library it adapts, in the same run: publish over ``POST /v1/messages``
against ``Mesh.publish``, and reading over ``GET /v1/stream`` (SSE) against ``Mesh.tail``.

The gateway runs as `nxs gateway` in its own process (as deployed: a client, the gateway, the server);
the HTTP client is one keep-alive aiohttp connection, one request at a time, so a publish figure is a
round trip each way, like the synchronous ``Mesh.publish`` it is compared with. (aiohttp, not httpx: on
this 2-core machine httpx alone spent ~1.3 ms per request, aiohttp ~0.1 ms, so the figure is the
gateway's.) Tail throughput replays N stored messages; tail latency is publish -> event at the reader,
live. Not in the default set: it needs the ``gateway`` extra and starts a process (`nxs bench gateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from nxs_cli.bench.latency import _samples
from nxs_cli.bench.report import Row
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import percentile, rate
from nxs_cli.bench.throughput import content_of

from nxs_mesh import Mesh
from nxs_mesh.wire.envelope import new_envelope

__all__ = ["bench_gateway"]

_CLI = [sys.executable, "-c", "from nxs_cli.app import main; main()"]


@contextlib.asynccontextmanager
async def _gateway_process(url: str) -> AsyncIterator[str]:
    """`nxs gateway` on a free loopback port; yields its base URL; SIGTERM and wait at the end."""
    proc = await asyncio.create_subprocess_exec(
        *_CLI, "--url", url, "gateway", "--listen", "127.0.0.1:0", "--max-body", str(16 << 20),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        found = re.search(r"listening on (http://\S+) ", line)
        if found is None:
            err = (await proc.stderr.read()).decode().strip()
            raise RuntimeError(f"nxs gateway did not start: {err or line or 'no output'}")
        yield found.group(1)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _events(client: aiohttp.ClientSession, params: dict[str, Any]) -> AsyncIterator[int]:
    """Each SSE event's id (the stream sequence) as it arrives."""
    async with client.get("/v1/stream", params=params) as r:
        r.raise_for_status()
        async for line in r.content:
            if line.startswith(b"id:"):
                yield int(line[3:])


async def _timed_count(n: int, items: AsyncIterator[Any]) -> float:
    t0 = time.perf_counter()
    got = 0
    async for _ in items:
        got += 1
        if got == n:
            break
    return rate(n, time.perf_counter() - t0)


async def _publish_rows(session: BenchSession, client: aiohttp.ClientSession, mesh: Mesh) -> list[Row]:
    n = max(10, session.options.sync_messages // 4)
    content = content_of(session.options.size)
    to = session.unique("gw-pub")
    body = {"type": "CHAT", "to": to, "content": content}

    async def http_once() -> float:
        t0 = time.perf_counter()
        async with client.post("/v1/messages", json=body) as r:
            r.raise_for_status()
            await r.read()
        return time.perf_counter() - t0

    async def mesh_once() -> float:
        t0 = time.perf_counter()
        await mesh.publish("CHAT", content, to=to)
        return time.perf_counter() - t0

    http, direct = await _samples(n, http_once), await _samples(n, mesh_once)
    note = f"{n} one at a time; HTTP: aiohttp keep-alive -> `nxs gateway` process -> server"
    return [
        Row("gateway publish", "msg/s", rate(n, sum(http)), rate(n, sum(direct)), note=note),
        Row("gateway publish", "p50 us", percentile(http, 50) * 1e6, percentile(direct, 50) * 1e6, higher_is_better=False,
            note="raw column: Mesh.publish (sync)"),
        Row("gateway publish", "p99 us", percentile(http, 99) * 1e6, percentile(direct, 99) * 1e6, higher_is_better=False),
    ]


async def _live_latency(session: BenchSession, mesh: Mesh, to: str,
                        reader: AsyncIterator[Any]) -> list[float]:
    """publish -> the reader yields it, one message at a time."""
    content = content_of(session.options.size)

    async def once() -> float:
        t0 = time.perf_counter()
        await mesh.publish("CHAT", content, to=to)
        await asyncio.wait_for(anext(reader), 10)
        return time.perf_counter() - t0

    return await _samples(max(10, session.options.latency_samples // 4), once)


async def _tail_rows(session: BenchSession, client: aiohttp.ClientSession, mesh: Mesh) -> list[Row]:
    n = max(10, session.options.sync_messages)
    to = session.unique("gw-tail")
    content = content_of(session.options.size)
    acks = await mesh.publish_many(mesh_envelopes(mesh, to, content, n))
    first = acks[0].seq
    sse_rate = await _timed_count(n, _events(client, {"instance": to, "since": first}))
    tail_rate = await _timed_count(n, mesh.tail("chat", instance=to, seq=first))
    live = session.unique("gw-live")
    sse = _events(client, {"instance": live, "since": (acks[-1].seq or 0) + 1})
    mesh_reader = mesh.tail("chat", instance=live, seq=(acks[-1].seq or 0) + 1, follow=True)
    try:
        await _ready(mesh, live, sse, mesh_reader)
        http_lat = await _live_latency(session, mesh, live, sse)
        mesh_lat = await _live_latency(session, mesh, live, mesh_reader)
    finally:
        for reader in (sse, mesh_reader):
            await reader.aclose()  # type: ignore[attr-defined]  # async generators
    return [
        Row("gateway SSE tail", "msg/s", sse_rate, tail_rate, note=f"replay of {n} stored; raw column: Mesh.tail"),
        Row("gateway SSE tail", "p50 us", percentile(http_lat, 50) * 1e6, percentile(mesh_lat, 50) * 1e6,
            higher_is_better=False, note="live: publish -> event at the reader; raw column: Mesh.tail(follow=True)"),
        Row("gateway SSE tail", "p99 us", percentile(http_lat, 99) * 1e6, percentile(mesh_lat, 99) * 1e6,
            higher_is_better=False),
    ]


async def _ready(mesh: Mesh, to: str, *readers: AsyncIterator[Any]) -> None:
    """Both followers are open: one message through each before timing starts."""
    await mesh.publish("CHAT", "warm", to=to)
    for reader in readers:
        await asyncio.wait_for(anext(reader), 15)


def mesh_envelopes(mesh: Mesh, to: str, content: str, n: int) -> Any:
    return (new_envelope("CHAT", content, source=mesh.source, to=to) for _ in range(n))


async def bench_gateway(session: BenchSession) -> list[Row]:
    mesh = await session.mesh()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with _gateway_process(session.url) as base, aiohttp.ClientSession(base_url=base, timeout=timeout) as client:
        return [*await _publish_rows(session, client, mesh), *await _tail_rows(session, client, mesh)]
