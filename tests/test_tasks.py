"""Tasks: claims are fenced, a paused worker's stale result is dropped, completion happens once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from node_support import DEAD_AFTER, HB, Worker, alerts_about, results_for, wait_state

from nxs_mesh import Mesh
from nxs_mesh.node.doctor import Doctor
from nxs_mesh.node.tasks import TaskStore, submit_task
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer


async def test_claim_fencing_tokens(mesh: Mesh):
    store = await TaskStore.open(mesh)
    tid = unique_id("task")
    first = await store.cas(tid, {"state": "claimed", "node": "a"}, 0)
    assert first is not None
    assert await store.cas(tid, {"state": "claimed", "node": "b"}, 0) is None  # create only once
    second = await store.cas(tid, {"state": "claimed", "node": "b"}, first)  # b takes over
    assert second is not None and second > first
    assert await store.cas(tid, {"state": "done", "node": "a"}, first) is None  # a's stale token: fenced
    assert await store.cas(tid, {"state": "done", "node": "b"}, second) is not None
    record, _ = await store.get(tid)
    assert record == {"state": "done", "node": "b"}
    assert await store.elect(f"r.{tid}", "x") and not await store.elect(f"r.{tid}", "y")


@pytest.mark.timeout(60)
async def test_paused_worker_comes_back_late_and_is_fenced(mesh: Mesh, nats_server: NatsServer, tmp_path: Path):
    doc = await Doctor(mesh, dead_after=DEAD_AFTER, interval=HB, store=await TaskStore.open(mesh)).start()
    ids = [unique_id("w") for _ in range(2)]
    procs = {i: Worker(nats_server.url, i, tmp_path, "-C", "sleep").start() for i in ids}
    try:
        for i in ids:
            await wait_state(mesh, i, "running")
        store = await TaskStore.open(mesh)
        ack, _ = await submit_task(mesh, "sleep", 2.0, ttl=120)

        async def claim() -> dict | None:
            return (await store.get(ack.message_id))[0]

        async def claimed() -> dict | None:
            rec = await claim()
            return rec if rec and rec["state"] == "claimed" else None  # the submitter's record comes first

        first = await eventually(claimed, timeout=15, what="claimed")
        a = first["node"]
        (b,) = [i for i in ids if i != a]
        await eventually(lambda: ack.message_id in doc.peers[a].claims, timeout=5, what="claim advertised")
        procs[a].signal(signal.SIGSTOP)  # alive but silent: the doctors must give its task to b

        async def done_by_b() -> bool:
            rec = await claim()
            return bool(rec and rec["state"] == "done" and rec["node"] == b)

        await eventually(done_by_b, timeout=20, what="b finished the task")
        procs[a].signal(signal.SIGCONT)  # a's handler now finishes too, with a stale token
        await eventually(lambda: "fenced" in procs[a].log(), timeout=15, what="a fenced")
        await eventually(lambda: doc.peers[a].state == "alive", timeout=10, what="a heard again")

        results = await results_for(mesh, ack.message_id)
        assert len(results) == 1 and results[0].payload.metadata["node"] == b
        async def events() -> list[str]:
            got = [x["event"] for x in await alerts_about(mesh, a)]
            return got if "recovered" in got else []

        got = await eventually(events, timeout=10, what="recovery alert")
        assert got.count("dead") == 1 and got.count("recovered") == 1, got
        # a's own doctor was paused too: it must not have declared b (or anyone) dead on waking.
        assert await alerts_about(mesh, b) == []
        assert procs[a].proc.poll() is None and procs[b].proc.poll() is None
    finally:
        await doc.stop()
        for w in procs.values():
            w.kill()


async def test_eventually_asks_again_after_a_predicate_times_out(mesh: Mesh):
    """A predicate's own MeshTimeout (one slow answer) does not end the wait: only the deadline does. The
    contract test's death-alert wait failed at once on one slow `mesh.last`, reported as the deadline."""
    calls = []

    async def slow_then_true() -> bool:
        calls.append(1)
        if len(calls) == 1:
            await mesh.request(unique_id("nobody"), "ping", timeout=0.2)  # a real MeshTimeout from the server
        return True

    assert await eventually(slow_then_true, timeout=10, interval=0.01, what="second answer") is True
    assert len(calls) == 2

    async def always_slow() -> bool:
        await mesh.request(unique_id("nobody"), "ping", timeout=0.1)
        return True

    with pytest.raises(AssertionError, match=r"timed out after 0.5s waiting for slow.*last error: no reply from"):
        await eventually(always_slow, timeout=0.5, interval=0.01, what="slow")
