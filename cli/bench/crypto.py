"""Message security costs: sign+verify and seal+open per message, and publish/consume throughput with
signing and verification on against the same run with them off.

- ``sign+verify`` / ``seal+open``: microseconds per message of the mesh's scheme (``Signer.headers`` +
  ``check_envelope``; ``MessageSecurity.seal`` + ``open``, which also encodes/decodes the content),
  beside bare PyNaCl on the same bytes (raw column): the ratio is the scheme's own overhead.
- ``publish signed``: pipelined publish by a client with an nkey (every envelope signed) against one
  without; ``consume verified``: a secure consumer (every delivery verified against the trust keys)
  against an open one, both reading the same signed messages. Target >= 0.8x.

Keys are made in memory (``wire.signing.new_seed``, a PyNaCl ``PrivateKey``): no key files.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable

import nacl.public
import nacl.signing
from nxs_cli.bench.report import Row, ratio_target
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import median, rate
from nxs_cli.bench.throughput import content_of

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.client.security import MessageSecurity
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import MSG_ID_HEADER
from nxs_mesh.wire.envelope import Envelope, Source, encode, new_envelope
from nxs_mesh.wire.sealing import SEAL_SCHEME, SEALED_HEADER
from nxs_mesh.wire.signing import Signer, new_seed
from nxs_mesh.wire.trust import NodeKeys, Trust, check_envelope

__all__ = ["bench_crypto", "seal_open_us", "sign_verify_us"]

_NODE = "bench-signer"


def _keys() -> tuple[Signer, Trust, nacl.public.PrivateKey]:
    signer, key = Signer(new_seed()), nacl.public.PrivateKey.generate()
    trust = Trust({_NODE: NodeKeys(signer.public, base64.b64encode(bytes(key.public_key)).decode())})
    return signer, trust, key


def _envelope(size: int) -> Envelope:
    return new_envelope("CHAT", content_of(size), source=Source(_NODE, "bench"), to=_NODE)


def sign_verify_us(n: int, size: int) -> tuple[float, float]:
    """(mesh, bare ed25519) microseconds per sign+verify of one envelope."""
    signer, trust, _ = _keys()
    env = _envelope(size)
    data, subject, mid = encode(env), subjects.for_envelope(env), env.id
    now = time.time()
    t0 = time.perf_counter()
    for _ in range(n):
        headers = signer.headers(subject, mid, data)
        headers[MSG_ID_HEADER] = mid
        check_envelope(trust, env, subject, data, headers, now)
    mesh_us = (time.perf_counter() - t0) / n * 1e6
    sk = nacl.signing.SigningKey.generate()
    vk = sk.verify_key
    t0 = time.perf_counter()
    for _ in range(n):
        vk.verify(sk.sign(data))
    return mesh_us, (time.perf_counter() - t0) / n * 1e6


def seal_open_us(n: int, size: int) -> tuple[float, float]:
    """(mesh, bare sealed box) microseconds per seal+open of one envelope's content."""
    _, trust, key = _keys()
    sec = MessageSecurity(trust=trust, seal_key=key)
    env, headers = _envelope(size), {SEALED_HEADER: SEAL_SCHEME}
    t0 = time.perf_counter()
    for _ in range(n):
        sec.open(sec.seal(env), headers)
    mesh_us = (time.perf_counter() - t0) / n * 1e6
    plain = content_of(size).encode()
    box_in, box_out = nacl.public.SealedBox(key.public_key), nacl.public.SealedBox(key)
    t0 = time.perf_counter()
    for _ in range(n):
        box_out.decrypt(box_in.encrypt(plain))
    return mesh_us, (time.perf_counter() - t0) / n * 1e6


async def _client(session: BenchSession, security: MessageSecurity) -> Mesh:
    mesh = Mesh(session.mesh_config(_NODE))
    mesh.security = security  # in-memory keys instead of key files
    return await mesh.connect()


async def _rates(session: BenchSession, run: Callable[[bool], Awaitable[float]]) -> tuple[float, float]:
    """Alternate on/off runs (order swapped each round); median rate of each."""
    on, off = [], []
    for i in range(session.options.rounds):
        for flag in ((True, False) if i % 2 == 0 else (False, True)):
            (on if flag else off).append(await run(flag))
    return median(on), median(off)


async def _throughput(session: BenchSession) -> list[Row]:
    n, size = session.options.messages, session.options.size
    signer, trust, _ = _keys()
    meshes = {
        "signing": await _client(session, MessageSecurity(signer=signer)),
        "plain": await _client(session, MessageSecurity()),
        "verifying": await _client(session, MessageSecurity(signer=signer, trust=trust, secure=True)),
    }
    try:
        async def publish(signed: bool) -> float:
            mesh = meshes["signing" if signed else "plain"]
            to = session.unique("sig-p")
            t0 = time.perf_counter()
            await mesh.publish_many(new_envelope("CHAT", content_of(size), source=mesh.source, to=to)
                                    for _ in range(n))
            return rate(n, time.perf_counter() - t0)

        async def consume(verified: bool) -> float:
            to = session.unique("sig-c")
            await meshes["signing"].publish_many(
                new_envelope("CHAT", content_of(size), source=meshes["signing"].source, to=to) for _ in range(n))
            return await _consume_all(meshes["verifying" if verified else "plain"], to, n, session.options.batch)

        pub_on, pub_off = await _rates(session, publish)
        con_on, con_off = await _rates(session, consume)
    finally:
        for mesh in meshes.values():
            await mesh.close()
    note = "baseline column: the same run with it off (ratio = its cost)"
    return [ratio_target(Row("publish signed", "msg/s", pub_on, pub_off, note=f"pipelined; {note}"), 0.8),
            ratio_target(Row("consume verified", "msg/s", con_on, con_off, note=f"secure consumer; {note}"), 0.8)]


async def _consume_all(mesh: Mesh, to: str, n: int, batch: int) -> float:
    done = asyncio.get_running_loop().create_future()
    count = 0

    async def handler(env: Envelope) -> None:
        nonlocal count
        count += 1
        if count == n and not done.done():
            done.set_result(None)

    subject = subjects.chat(to)
    t0 = time.perf_counter()
    consumer = await mesh.consume("chat", handler, durable=to, filters=[subject], batch=batch)
    try:
        await asyncio.wait_for(done, timeout=max(30.0, n / 300))
    finally:
        elapsed = time.perf_counter() - t0
        await consumer.stop()
    if consumer.stats.refused:
        raise RuntimeError(f"bench consumer refused {consumer.stats.refused} of its own signed messages")
    return rate(n, elapsed)


async def bench_crypto(session: BenchSession) -> list[Row]:
    n, size = max(200, session.options.messages // 10), session.options.size
    sv, sv_raw = await asyncio.to_thread(sign_verify_us, n, size)
    so, so_raw = await asyncio.to_thread(seal_open_us, n, size)
    raw_note = "raw: bare PyNaCl on the same bytes"
    return [
        Row("sign+verify", "us/msg", sv, sv_raw, higher_is_better=False, note=f"{size} B content; {raw_note}"),
        Row("seal+open", "us/msg", so, so_raw, higher_is_better=False, note=f"{size} B content; {raw_note}"),
        *await _throughput(session),
    ]

