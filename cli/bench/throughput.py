"""Throughput: JetStream publish (sync and pipelined) and durable consume with explicit ack.

Mesh and its anchors (``report``: raw nats-py, lean loops on nats-py core, a push consumer) do the same
work on the same server and stream (NXS_CHAT), on separate subjects: the anchors send bytes of the
same size as the mesh's wire envelope, with a ``Nats-Msg-Id`` header like the mesh's, so a ratio is
the cost of the mesh layer (envelope build, encode, decode, screening). Each round runs every side
once (order rotated); the median round is reported, with the CPU per message of this process.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.js import api as jsapi
from nxs_cli.bench.lean import LeanPublisher, lean_pull, push_consume
from nxs_cli.bench.report import Row, anchor_target
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import Sample, Stopwatch, median

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.transport.publisher import MAX_IN_FLIGHT
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, encode, new_envelope

__all__ = ["bench_consume", "bench_publish_async", "bench_publish_sync"]

STREAM = "NXS_CHAT"


def content_of(size: int) -> str:
    return "x" * size


def sample_envelope(mesh: Mesh, to: str, size: int) -> Envelope:
    return new_envelope("CHAT", content_of(size), source=mesh.source, to=to)


Run = Callable[[int], Awaitable[Sample]]


async def run_rounds(session: BenchSession, runs: dict[str, Run]) -> dict[str, Sample]:
    """Every run once per round, the order rotated each round (so none always goes first); the
    median rate and median CPU of each."""
    names = list(runs)
    got: dict[str, list[Sample]] = {name: [] for name in names}
    for i in range(session.options.rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            got[name].append(await runs[name](i))
    return {name: Sample(median([s.rate for s in samples]), median([s.cpu_us for s in samples]))
            for name, samples in got.items()}


async def _rounds(session: BenchSession, mesh_run: Callable[[int], Awaitable[float]],
                  raw_run: Callable[[int], Awaitable[float]]) -> tuple[float, float]:
    """Alternate mesh and raw runs (order swapped each round); median rate of each."""
    async def as_sample(run: Callable[[int], Awaitable[float]], i: int) -> Sample:
        return Sample(await run(i), 0.0)

    out = await run_rounds(session, {"mesh": functools.partial(as_sample, mesh_run),
                                     "raw": functools.partial(as_sample, raw_run)})
    return out["mesh"].rate, out["raw"].rate


def throughput_rows(scenario: str, samples: dict[str, Sample], note: str = "", **limits: float) -> list[Row]:
    """The rate row (target against ``limits``' anchors) and the CPU-per-message row of a scenario."""
    def of(field: str) -> dict[str, float]:
        return {name: getattr(s, field) for name, s in samples.items()}

    rates, cpus = of("rate"), of("cpu_us")
    row = Row(scenario, "msg/s", **rates, note=note)  # type: ignore[arg-type]
    # CPU of the bench process per message: the client side only (the server is another process).
    cpu = Row(f"{scenario} CPU", "us/msg", **cpus, higher_is_better=False,  # type: ignore[arg-type]
              versus=("lean",) if "lean" in cpus else ())
    return [anchor_target(row, **limits) if limits else row, cpu]


async def _publish_setup(session: BenchSession) -> tuple[Mesh, Any, str, bytes]:
    """Both publish scenarios: the mesh client, raw JetStream, the content, and wire bytes of the same size."""
    size = session.options.size
    mesh = await session.mesh()
    js = (await session.raw()).jetstream()
    return mesh, js, content_of(size), encode(sample_envelope(mesh, "x", size))


async def _lean_runner(session: BenchSession, prefix: str, n: int, wire: bytes, window: int) -> Run:
    lean = await LeanPublisher(await session.raw(), window).start()

    async def lean_run(i: int) -> Sample:
        subject = subjects.chat(session.unique(prefix))
        with Stopwatch() as sw:
            await lean.publish(subject, wire, n)
        return sw.sample(n)

    return lean_run


async def bench_publish_sync(session: BenchSession) -> list[Row]:
    n = session.options.sync_messages
    mesh, js, content, wire = await _publish_setup(session)

    async def mesh_run(i: int) -> Sample:
        to = session.unique("pubs-m")
        with Stopwatch() as sw:
            for _ in range(n):
                await mesh.publish("CHAT", content, to=to)
        return sw.sample(n)

    async def raw_run(i: int) -> Sample:
        subject = subjects.chat(session.unique("pubs-r"))
        prefix = uuid.uuid4().hex
        with Stopwatch() as sw:
            for k in range(n):
                await js.publish(subject, wire, headers={"Nats-Msg-Id": f"{prefix}{k}"})
        return sw.sample(n)

    lean_run = await _lean_runner(session, "pubs-l", n, wire, 1)
    samples = await run_rounds(session, {"mesh": mesh_run, "raw": raw_run, "lean": lean_run})
    return throughput_rows("publish sync", samples, "one at a time, each waits for its ack", lean=0.9)


async def bench_publish_async(session: BenchSession) -> list[Row]:
    n = session.options.messages
    mesh, js, content, wire = await _publish_setup(session)

    async def mesh_run(i: int) -> Sample:
        to = session.unique("puba-m")
        with Stopwatch() as sw:
            await mesh.publish_many(new_envelope("CHAT", content, source=mesh.source, to=to) for _ in range(n))
        return sw.sample(n)

    async def raw_run(i: int) -> Sample:
        subject = subjects.chat(session.unique("puba-r"))
        prefix = uuid.uuid4().hex
        with Stopwatch() as sw:
            futures = [await js.publish_async(subject, wire, headers={"Nats-Msg-Id": f"{prefix}{k}"})
                       for k in range(n)]
            await asyncio.gather(*futures)
        return sw.sample(n)

    lean_run = await _lean_runner(session, "puba-l", n, wire, MAX_IN_FLIGHT)
    samples = await run_rounds(session, {"mesh": mesh_run, "raw": raw_run, "lean": lean_run})
    note = (f"mesh: envelopes built and sent by publish_many; raw: publish_async; lean: own inbox, "
            f"{MAX_IN_FLIGHT} acks outstanding at most")
    return throughput_rows("publish pipelined", samples, note, lean=0.9)


async def preload(nc: Client, subject: str, payloads: list[bytes]) -> None:
    """Store ``payloads`` on ``subject`` fast (pipelined, no dedup header: the bytes may repeat)."""
    js = nc.jetstream()
    futures = [await js.publish_async(subject, p) for p in payloads]
    await asyncio.gather(*futures)


async def bench_consume(session: BenchSession) -> list[Row]:
    opts = session.options
    n, size, batch = opts.messages, opts.size, opts.batch
    timeout = max(30.0, n / 500)
    mesh = await session.mesh()
    nc = await session.raw()
    js = nc.jetstream()

    async def preloaded(prefix: str) -> tuple[str, str]:
        to = session.unique(prefix)
        subject = subjects.chat(to)
        await preload(nc, subject, [encode(sample_envelope(mesh, to, size))] * n)
        return to, subject

    async def mesh_run(i: int) -> Sample:
        return await mesh_consume_sample(session, mesh, nc, n, "con-m", batch=batch, timeout=timeout)

    async def raw_run(i: int) -> Sample:
        to, subject = await preloaded("con-r")
        with Stopwatch() as sw:
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
        await psub.unsubscribe()
        return sw.sample(n)

    async def lean_run(i: int) -> Sample:
        to, subject = await preloaded("con-l")
        with Stopwatch() as sw:
            await lean_pull(nc, subject, to, n, batch, timeout)
        return sw.sample(n)

    async def push_run(i: int) -> Sample:
        to, subject = await preloaded("con-p")
        with Stopwatch() as sw:
            await push_consume(nc, subject, to, n, batch, timeout)
        return sw.sample(n)

    samples = await run_rounds(session, {"mesh": mesh_run, "raw": raw_run, "lean": lean_run, "push": push_run})
    note = (f"durable, explicit ack, empty handler; mesh: requests of {batch} kept overlapping while there is a "
            f"backlog; raw (fetch) and lean: pull {batch} at a time; push: js.subscribe callback")
    return throughput_rows("consume", samples, note, lean=0.9, push=1.0)


async def mesh_consume_rate(session: BenchSession, mesh: Mesh, nc: Client, n: int, prefix: str, *,
                            timeout: float, **consume: Any) -> float:
    """Preload ``n`` chats, then time one ``Mesh.consume`` handling them all (msg/s)."""
    return (await mesh_consume_sample(session, mesh, nc, n, prefix, timeout=timeout, **consume)).rate


async def mesh_consume_sample(session: BenchSession, mesh: Mesh, nc: Client, n: int, prefix: str, *,
                              timeout: float, **consume: Any) -> Sample:
    """Preload ``n`` chats, then time one ``Mesh.consume`` handling them all."""
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

    with Stopwatch(session.profiler) as sw:
        consumer = await mesh.consume("chat", handler, durable=to, filters=[subject], **consume)
        await asyncio.wait_for(done, timeout=timeout)
    await consumer.stop()
    return sw.sample(n)
