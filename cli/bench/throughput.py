"""Throughput: JetStream publish (sync and pipelined) and durable consume with explicit ack.

Mesh and raw nats-py do the same work on the same server and stream (NXS_CHAT), on separate subjects:
the raw path sends bytes of the same size as the mesh's wire envelope, with a ``Nats-Msg-Id`` header
like the mesh's, so the ratio is the cost of the mesh layer (envelope build, encode, decode, screening).
Rounds alternate mesh and raw; the median round is reported.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.js import api as jsapi
from nxs_cli.bench.report import Row, ratio_target
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import median, rate

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, encode, new_envelope

__all__ = ["bench_consume", "bench_publish_async", "bench_publish_sync"]

STREAM = "NXS_CHAT"


def content_of(size: int) -> str:
    return "x" * size


def sample_envelope(mesh: Mesh, to: str, size: int) -> Envelope:
    return new_envelope("CHAT", content_of(size), source=mesh.source, to=to)


async def _rounds(session: BenchSession, mesh_run: Callable[[int], Awaitable[float]],
                  raw_run: Callable[[int], Awaitable[float]]) -> tuple[float, float]:
    """Alternate mesh and raw runs (order swapped each round); median rate of each."""
    mesh_rates, raw_rates = [], []
    for i in range(session.options.rounds):
        if i % 2 == 0:
            mesh_rates.append(await mesh_run(i))
            raw_rates.append(await raw_run(i))
        else:
            raw_rates.append(await raw_run(i))
            mesh_rates.append(await mesh_run(i))
    return median(mesh_rates), median(raw_rates)


async def _publish_setup(session: BenchSession) -> tuple[Mesh, Any, str, bytes]:
    """Both publish scenarios: the mesh client, raw JetStream, the content, and wire bytes of the same size."""
    size = session.options.size
    mesh = await session.mesh()
    js = (await session.raw()).jetstream()
    return mesh, js, content_of(size), encode(sample_envelope(mesh, "x", size))


async def bench_publish_sync(session: BenchSession) -> list[Row]:
    n = session.options.sync_messages
    mesh, js, content, wire = await _publish_setup(session)

    async def mesh_run(i: int) -> float:
        to = session.unique("pubs-m")
        t0 = time.perf_counter()
        for _ in range(n):
            await mesh.publish("CHAT", content, to=to)
        return rate(n, time.perf_counter() - t0)

    async def raw_run(i: int) -> float:
        subject = subjects.chat(session.unique("pubs-r"))
        prefix = uuid.uuid4().hex
        t0 = time.perf_counter()
        for k in range(n):
            await js.publish(subject, wire, headers={"Nats-Msg-Id": f"{prefix}{k}"})
        return rate(n, time.perf_counter() - t0)

    m, r = await _rounds(session, mesh_run, raw_run)
    return [ratio_target(Row("publish sync", "msg/s", m, r), 0.9)]


async def bench_publish_async(session: BenchSession) -> list[Row]:
    n = session.options.messages
    mesh, js, content, wire = await _publish_setup(session)

    async def mesh_run(i: int) -> float:
        to = session.unique("puba-m")
        t0 = time.perf_counter()
        await mesh.publish_many(new_envelope("CHAT", content, source=mesh.source, to=to) for _ in range(n))
        return rate(n, time.perf_counter() - t0)

    async def raw_run(i: int) -> float:
        subject = subjects.chat(session.unique("puba-r"))
        prefix = uuid.uuid4().hex
        t0 = time.perf_counter()
        futures = [await js.publish_async(subject, wire, headers={"Nats-Msg-Id": f"{prefix}{k}"})
                   for k in range(n)]
        await asyncio.gather(*futures)
        return rate(n, time.perf_counter() - t0)

    m, r = await _rounds(session, mesh_run, raw_run)
    return [ratio_target(Row("publish pipelined", "msg/s", m, r), 0.9)]


async def preload(nc: Client, subject: str, payloads: list[bytes]) -> None:
    """Store ``payloads`` on ``subject`` fast (pipelined, no dedup header: the bytes may repeat)."""
    js = nc.jetstream()
    futures = [await js.publish_async(subject, p) for p in payloads]
    await asyncio.gather(*futures)


async def bench_consume(session: BenchSession) -> list[Row]:
    opts = session.options
    n, size, batch = opts.messages, opts.size, opts.batch
    mesh = await session.mesh()
    nc = await session.raw()
    js = nc.jetstream()

    async def mesh_run(i: int) -> float:
        return await mesh_consume_rate(session, mesh, nc, n, "con-m", batch=batch, timeout=max(30.0, n / 500))

    async def raw_run(i: int) -> float:
        to = session.unique("con-r")
        subject = subjects.chat(to)
        wire = encode(sample_envelope(mesh, to, size))
        await preload(nc, subject, [wire] * n)
        t0 = time.perf_counter()
        psub = await js.pull_subscribe(
            subject, durable=to, stream=STREAM,
            config=jsapi.ConsumerConfig(ack_policy=jsapi.AckPolicy.EXPLICIT, max_ack_pending=max(1000, batch * 4)),
        )
        got = 0
        while got < n:
            msgs = await psub.fetch(min(batch, n - got), timeout=5)
            for msg in msgs:
                await msg.ack()
            got += len(msgs)
        elapsed = time.perf_counter() - t0
        await psub.unsubscribe()
        return rate(n, elapsed)

    m, r = await _rounds(session, mesh_run, raw_run)
    return [ratio_target(Row("consume", "msg/s", m, r, note=f"durable pull, fetch batch {batch}, explicit ack, empty handler"), 0.9)]


async def mesh_consume_rate(session: BenchSession, mesh: Mesh, nc: Client, n: int, prefix: str, *,
                            timeout: float, **consume: Any) -> float:
    """Preload ``n`` chats, then time one ``Mesh.consume`` handling them all (msg/s)."""
    to = session.unique(prefix)
    subject = subjects.chat(to)
    await preload(nc, subject, [encode(sample_envelope(mesh, to, session.options.size)) for _ in range(n)])
    done = asyncio.get_running_loop().create_future()
    count = 0

    async def handler(env: Envelope) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    t0 = time.perf_counter()
    consumer = await mesh.consume("chat", handler, durable=to, filters=[subject], **consume)
    await asyncio.wait_for(done, timeout=timeout)
    elapsed = time.perf_counter() - t0
    await consumer.stop()
    return rate(n, elapsed)
