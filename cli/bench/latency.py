"""Latency, one message at a time: publish -> handler, and request/reply over COMMAND.

End to end: the mesh path is ``Mesh.publish`` -> ``Mesh.consume`` handler (durable pull consumer),
against nats-py's ``js.publish`` -> a durable push consumer callback with explicit ack (the push
column), the lowest-latency JetStream delivery nats-py offers. Request/reply: ``Mesh.request``
answered by ``Mesh.reply`` against the same hops done by hand in nats-py (raw: JetStream publish,
pull consumer, JetStream reply, core inbox), core NATS request/reply (lean: no JetStream at all) and
Synadia's agent SDK prompt round trip (sdk, ``bench.sdk``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

from nats.aio.msg import Msg
from nats.js import api as jsapi
from nxs_cli.bench.lean import core_request
from nxs_cli.bench.report import Row, anchor_target
from nxs_cli.bench.sdk import sdk_prompt
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import percentile
from nxs_cli.bench.throughput import content_of

from nxs_mesh import Mesh
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, Source, encode, new_envelope

__all__ = ["bench_latency", "bench_request"]

WARMUP = 20


async def _samples(n: int, once: Callable[[], Awaitable[float]]) -> list[float]:
    for _ in range(min(WARMUP, n)):
        await once()
    return [await once() for _ in range(n)]


def _rows(scenario: str, sides: dict[str, list[float] | None], qs: tuple[int, ...], **limits: float) -> list[Row]:
    """One row per percentile (microseconds), a column per side; the p50 row carries the target."""
    rows = []
    for q in qs:
        figures = {name: percentile(samples, q) * 1e6 for name, samples in sides.items() if samples}
        row = Row(scenario, f"p{q} us", **figures, higher_is_better=False)  # type: ignore[arg-type]
        rows.append(anchor_target(row, **limits) if limits and q == 50 else row)
    return rows


async def bench_latency(session: BenchSession) -> list[Row]:
    # One connection per side, as an agent has: the mesh publishes and consumes through one Mesh, raw
    # nats-py through one client (separate connections would add a socket hop to the mesh side only).
    mesh = await _mesh_latency(session)
    push = await _raw_latency(session)
    rows = _rows("publish -> handler", {"mesh": mesh, "push": push}, (50, 90, 99), push=1.2)
    rows[0] = replace(rows[0], note="mesh: durable pull consumer (streaming); push: nats-py durable push consumer, explicit ack")
    return rows


async def _mesh_latency(session: BenchSession) -> list[float]:
    """mesh: publish -> durable pull consumer handler."""
    opts = session.options
    content = content_of(opts.size)
    pub = sub = await session.mesh()
    loop = asyncio.get_running_loop()
    to = session.unique("lat-m")
    waiter: asyncio.Future[float] | None = None

    async def handler(env: Envelope) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    consumer = await sub.consume("chat", handler, durable=to, filters=[subjects.chat(to)], batch=opts.batch)

    async def mesh_once() -> float:
        nonlocal waiter
        waiter = loop.create_future()
        t0 = time.perf_counter()
        await pub.publish("CHAT", content, to=to)
        return await asyncio.wait_for(waiter, 10) - t0

    try:
        return await _samples(opts.latency_samples, mesh_once)
    finally:
        await consumer.stop()


async def _raw_latency(session: BenchSession) -> list[float]:
    """raw: js.publish -> durable push consumer, explicit ack."""
    opts = session.options
    nc = await session.raw()
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    raw_to = session.unique("lat-r")
    subject = subjects.chat(raw_to)
    source = Source(raw_to, "bench")  # only the bytes matter: the raw side never decodes them
    wire = encode(new_envelope("CHAT", content_of(opts.size), source=source, to=raw_to))
    raw_waiter: asyncio.Future[float] | None = None

    async def on_msg(msg: Msg) -> None:
        if raw_waiter is not None and not raw_waiter.done():
            raw_waiter.set_result(time.perf_counter())
        await msg.ack()

    rsub = await js.subscribe(subject, durable=raw_to, stream="NXS_CHAT", cb=on_msg, manual_ack=True,
                              config=jsapi.ConsumerConfig(ack_policy=jsapi.AckPolicy.EXPLICIT))
    prefix = uuid.uuid4().hex
    counter = iter(range(10**9))

    async def raw_once() -> float:
        nonlocal raw_waiter
        raw_waiter = loop.create_future()
        t0 = time.perf_counter()
        await js.publish(subject, wire, headers={"Nats-Msg-Id": f"{prefix}{next(counter)}"})
        return await asyncio.wait_for(raw_waiter, 10) - t0

    try:
        return await _samples(opts.latency_samples, raw_once)
    finally:
        await rsub.unsubscribe()


async def bench_request(session: BenchSession) -> list[Row]:
    n = max(10, session.options.latency_samples // 2)
    client = await session.mesh()
    mesh = await _mesh_request(session, client, n)
    raw = await _raw_request(session, client.source, n)
    core = await core_request(await session.raw(), await session.raw(), content_of(session.options.size).encode(),
                              n, warmup=WARMUP)
    sdk = await sdk_prompt(session.url, content_of(session.options.size), n, warmup=WARMUP)
    rows = _rows("request/reply", {"mesh": mesh, "raw": raw, "lean": core, "sdk": sdk.samples}, (50, 99), sdk=1.0)
    note = ("COMMAND over JetStream, RESULT back; raw: the same hops by hand; lean: core NATS request/reply; "
            f"sdk: {sdk.what}")
    rows[0] = replace(rows[0], note=note)
    return rows


async def _mesh_request(session: BenchSession, client: Mesh, n: int) -> list[float]:
    """mesh: Mesh.request -> a consumer that answers with Mesh.reply."""
    opts = session.options
    server_id = session.unique("rr-m")
    responder = await session.mesh(server_id)

    async def on_command(env: Envelope) -> None:
        await responder.reply(env, env.content["args"])

    consumer = await responder.consume("command", on_command, durable=server_id, batch=opts.batch)
    args = content_of(opts.size)

    async def mesh_once() -> float:
        t0 = time.perf_counter()
        await client.request(server_id, "echo", args, timeout=10)
        return time.perf_counter() - t0

    try:
        return await _samples(n, mesh_once)
    finally:
        await consumer.stop()


async def _raw_request(session: BenchSession, source: Source, n: int) -> list[float]:
    """raw: the same hops by hand (JetStream publish, pull consumer, JetStream publish of the reply)."""
    opts = session.options
    args = content_of(opts.size)
    nc = await session.raw()
    js = nc.jetstream()
    raw_to = session.unique("rr-r")
    cmd_subject = subjects.command(raw_to, "_all", 5)
    wire = encode(new_envelope("COMMAND", {"command": "echo", "args": args}, source=source, to=raw_to))
    psub = await js.pull_subscribe(cmd_subject, durable=raw_to, stream="NXS_COMMAND",
                                   config=jsapi.ConsumerConfig(ack_policy=jsapi.AckPolicy.EXPLICIT))
    stop = asyncio.Event()

    async def serve() -> None:
        while not stop.is_set():
            try:
                msgs = await psub.fetch(opts.batch, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                reply_to = (msg.headers or {}).get("Nxs-Reply", "")
                await js.publish(reply_to, msg.data, headers={"Nats-Msg-Id": uuid.uuid4().hex})
                await msg.ack()

    server = asyncio.create_task(serve(), name="bench-raw-responder")

    async def raw_once() -> float:
        t0 = time.perf_counter()
        reply = subjects.result(uuid.uuid4().hex)
        sub = await nc.subscribe(reply, max_msgs=1)
        await js.publish(cmd_subject, wire, headers={"Nats-Msg-Id": uuid.uuid4().hex, "Nxs-Reply": reply})
        await sub.next_msg(timeout=10)
        await sub.unsubscribe()
        return time.perf_counter() - t0

    try:
        return await _samples(n, raw_once)
    finally:
        stop.set()
        server.cancel()
        try:
            await server
        except asyncio.CancelledError:
            pass
        await psub.unsubscribe()
