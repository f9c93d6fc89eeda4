"""A signed ``publish_many`` signs its chunks in a worker thread while the loop sends the chunk before
(client.publishing): every envelope must still be stored once, in order, each with its own valid
signature, whatever the chunking; and a failure mid-batch leaves no signing job behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.client import publishing
from nxs_mesh.testing.keys import MeshKeys, write_mesh_keys
from nxs_mesh.wire.envelope import new_envelope
from nxs_mesh.wire.errors import EnvelopeError
from nxs_mesh.wire.signing import SIG_HEADER, SIGNER_HEADER, verify


@pytest.fixture
def keys(tmp_path: Path) -> MeshKeys:
    return write_mesh_keys(tmp_path / "sec", ["alice", "bob"])


def _count_signing(mesh: Mesh, before: Callable[[], None] | None = None) -> tuple[list[int], list[int]]:
    """Wrap the mesh's real ``Signer.sign_items`` to record each job's start and end (sizes), running
    ``before`` first inside the job (in the worker thread)."""
    signer = mesh.security.signer
    assert signer is not None
    started: list[int] = []
    finished: list[int] = []
    sign_items = signer.sign_items

    def counted(items):  # type: ignore[no-untyped-def]
        started.append(len(items))
        if before is not None:
            before()
        try:
            return sign_items(items)
        finally:
            finished.append(len(items))

    signer.sign_items = counted  # type: ignore[method-assign]
    return started, finished


@pytest.mark.parametrize("count", [1, publishing._SIGN_CHUNK, 2 * publishing._SIGN_CHUNK + 7])
async def test_signed_batch_stores_every_envelope_in_order_each_verified(
        keys: MeshKeys, mesh_config: MeshConfig, count: int) -> None:
    alice = await Mesh(keys.config(mesh_config, "alice")).connect()
    bob = await Mesh(keys.config(mesh_config, "bob")).connect()
    try:
        envs = [new_envelope("CHAT", i, source=alice.source, to="bob") for i in range(count)]
        results = await alice.publish_many(iter(envs))
        assert [r.message_id for r in results] == [e.id for e in envs]
        seqs = [r.seq for r in results]
        assert seqs == sorted(seqs) and len(set(seqs)) == count  # type: ignore[type-var]
        records = [r async for r in bob.tail("chat", instance="bob")]
        assert [r.envelope.id for r in records if r.envelope] == [e.id for e in envs]
        assert all(r.verified for r in records)  # bob checks each against the trust file
        public = keys.signer("alice").public
        for rec in records[:3] + records[-3:]:  # and by hand, with the contract's own verify()
            assert rec.headers[SIGNER_HEADER] == public
            assert verify(public, rec.subject, rec.headers["Nats-Msg-Id"], rec.data, rec.headers[SIG_HEADER])
        again = await alice.publish_many(envs[:5])  # same ids, same signatures: deduplicated
        assert [r.duplicate for r in again] == [True] * min(5, count)
    finally:
        await alice.close()
        await bob.close()


async def test_a_bad_envelope_mid_batch_raises_and_leaves_no_signing_job(
        keys: MeshKeys, mesh_config: MeshConfig) -> None:
    alice = await Mesh(keys.config(mesh_config, "alice")).connect()
    started, finished = _count_signing(alice)
    try:
        def envelopes():
            for i in range(publishing._SIGN_CHUNK + 10):
                yield new_envelope("CHAT", i, source=alice.source, to="bob")
            yield new_envelope("CHAT", "\ud800", source=alice.source, to="bob")  # a lone surrogate: no UTF-8

        with pytest.raises(EnvelopeError) as err:
            await alice.publish_many(envelopes())
        assert err.value.field == "payload.content"
        # The chunk being signed when the error came was waited for: no thread still works for it.
        assert started == finished == [publishing._SIGN_CHUNK]
        assert "0 batches" in repr(alice.pub)
        ok = await alice.publish_many([new_envelope("CHAT", "after", source=alice.source, to="bob")])
        assert ok[0].seq is not None and started == finished == [publishing._SIGN_CHUNK, 1]
    finally:
        await alice.close()


async def test_cancelling_a_signed_batch_waits_for_its_signing_job(keys: MeshKeys, mesh_config: MeshConfig) -> None:
    alice = await Mesh(keys.config(mesh_config, "alice")).connect()
    loop = asyncio.get_running_loop()
    in_job, release = asyncio.Event(), threading.Event()

    def hold() -> None:  # in the worker thread: say the job runs, then wait until the test lets it go
        loop.call_soon_threadsafe(in_job.set)
        release.wait(10)

    started, finished = _count_signing(alice, before=hold)
    try:
        envs = (new_envelope("CHAT", i, source=alice.source, to="bob") for i in range(3 * publishing._SIGN_CHUNK))
        task = asyncio.create_task(alice.publish_many(envs))
        await asyncio.wait_for(in_job.wait(), 10)
        task.cancel()
        # While its signing job runs, the cancelled batch does not end (0.5 s: time for it to end wrongly).
        done, _ = await asyncio.wait([task], timeout=0.5)
        assert not done
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert started and started == finished  # ended only once no thread still signed for it
    finally:
        release.set()
        await alice.close()
