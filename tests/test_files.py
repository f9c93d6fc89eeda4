"""Files in the Object Store (`mesh.files`): streaming both ways, interop with nats-py's own object
store, SHA-256 and chunk checks on read, retries across a server restart, replicas, and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import api as jsapi
from nxs_cli.app import app
from typer.testing import CliRunner

from nxs_mesh import FileCorrupt, FileError, FileNotFound, JetStreamUnavailable, Mesh, MeshConfig, MeshTimeout
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport import objects
from nxs_mesh.transport.server import LocalCluster, NatsServer

MiB = 1024 * 1024
STREAM = objects.stream_name(objects.BUCKET)


def blob(size: int, seed: int = 1) -> bytes:
    """Deterministic incompressible bytes."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


@pytest.fixture
async def raw(nats_server: NatsServer) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def test_put_get_list_info_delete_roundtrip(mesh: Mesh, tmp_path: Path) -> None:
    data = blob(3 * MiB + 12345)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    seen: list[tuple[int, int | None]] = []
    info = await mesh.files.put(src, progress=lambda done, total: seen.append((done, total)))
    assert (info.name, info.size, info.chunks) == ("in.bin", len(data), 25)
    assert info.digest == objects.digest_of(hashlib.sha256(data).digest())
    assert seen[-1] == (len(data), len(data)) and len(seen) >= 1

    got: list[tuple[int, int | None]] = []
    out = tmp_path / "out.bin"
    await mesh.files.get("in.bin", out, progress=lambda done, total: got.append((done, total)))
    assert out.read_bytes() == data and got[-1] == (len(data), len(data))
    assert [f.name for f in await mesh.files.list()] == ["in.bin"]
    assert (await mesh.files.info("in.bin")).size == len(data)
    assert b"".join([c async for c in mesh.files.stream("in.bin")]) == data

    await mesh.files.delete("in.bin")
    assert await mesh.files.list() == []
    with pytest.raises(FileNotFound, match="no file 'in.bin'"):
        await mesh.files.get("in.bin", tmp_path / "again.bin")
    assert not (tmp_path / "again.bin").exists()
    with pytest.raises(FileNotFound):
        await mesh.files.delete("in.bin")


async def test_sources_async_iterator_file_object_bytes_and_empty(mesh: Mesh) -> None:
    data = blob(1 * MiB + 7, seed=2)

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100_003):  # odd sizes: re-chunked to 128 KiB
            yield data[i:i + 100_003]

    info = await mesh.files.put(pieces(), name="it")
    assert info.size == len(data) and info.chunks == 9
    sink = io.BytesIO()
    await mesh.files.get("it", sink)
    assert sink.getvalue() == data

    await mesh.files.put(io.BytesIO(data), name="fobj")
    assert b"".join([c async for c in mesh.files.stream("fobj")]) == data
    empty = await mesh.files.put(b"", name="empty")
    assert (empty.size, empty.chunks) == (0, 0)
    assert [c async for c in mesh.files.stream("empty")] == []

    again = await mesh.files.put(b"v2", name="it")  # replacing: the old chunks are purged
    assert b"".join([c async for c in mesh.files.stream("it")]) == b"v2" and again.chunks == 1
    with pytest.raises(FileError, match="no such file"):
        await mesh.files.put("/nonexistent/x.bin")
    with pytest.raises(FileError, match="bad file name"):
        await mesh.files.put(b"x", name="")


async def test_interop_with_nats_py_object_store_both_ways(mesh: Mesh, raw: Any, tmp_path: Path) -> None:
    data = blob(2 * MiB + 3, seed=3)
    await mesh.files.put(data, name="ours", metadata={"k": "v"})
    store = await raw.object_store(objects.BUCKET)
    info = await store.get_info("ours")
    assert (info.size, info.chunks, info.digest) == (len(data), 17, objects.digest_of(hashlib.sha256(data).digest()))
    with (tmp_path / "np.bin").open("wb") as f:
        await store.get("ours", writeinto=f)  # nats-py checks the digest itself
    assert (tmp_path / "np.bin").read_bytes() == data
    assert {e.name for e in await store.list()} == {"ours"}

    await store.put("theirs", io.BytesIO(data))
    await mesh.files.get("theirs", tmp_path / "ours.bin")
    assert (tmp_path / "ours.bin").read_bytes() == data
    await store.delete("theirs")
    with pytest.raises(FileNotFound):
        await mesh.files.info("theirs")
    await mesh.files.delete("ours")
    with pytest.raises(nats.js.errors.ObjectNotFoundError):
        await store.get_info("ours")


async def _rewrite_meta(raw: Any, name: str, **changes: Any) -> None:
    subject = objects.meta_subject(objects.BUCKET, name)
    doc = json.loads((await raw.get_last_msg(STREAM, subject)).data)
    doc.update(changes)
    await raw.publish(subject, json.dumps(doc).encode(), headers={"Nats-Rollup": "sub"})


async def test_missing_chunk_size_and_digest_mismatch_are_errors(mesh: Mesh, raw: Any, tmp_path: Path) -> None:
    data = blob(MiB, seed=4)
    for name in ("holed", "short", "forged", "purged"):
        await mesh.files.put(data, name=name)
    holed = await mesh.files.info("holed")
    first = await raw.get_msg(STREAM, seq=1, subject=objects.chunk_subject(objects.BUCKET, (
        await objects.object_info(mesh.link, objects.BUCKET, "holed")).nuid), next=True)
    await raw.delete_msg(STREAM, first.seq + 3)  # a chunk in the middle
    out = tmp_path / "out.bin"
    with pytest.raises(FileCorrupt, match=f"incomplete, {holed.chunks - 1} of {holed.chunks} chunks"):
        await mesh.files.get("holed", out)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if ".part" in p]  # no partial file left

    await _rewrite_meta(raw, "short", size=len(data) - 10)
    with pytest.raises(FileCorrupt, match="more than the"):
        await mesh.files.get("short", out)
    await _rewrite_meta(raw, "forged", digest=objects.digest_of(hashlib.sha256(b"other").digest()))
    with pytest.raises(FileCorrupt, match="digest mismatch"):
        await mesh.files.get("forged", out)
    assert not out.exists()
    purged = await objects.object_info(mesh.link, objects.BUCKET, "purged")
    await raw.purge_stream(STREAM, subject=objects.chunk_subject(objects.BUCKET, purged.nuid))
    with pytest.raises(FileCorrupt, match="incomplete, 0 of 8"):  # never a hang waiting for chunks
        await mesh.files.get("purged", out)

    await raw.publish(objects.meta_subject(objects.BUCKET, "garbage"), b"not json", headers={"Nats-Rollup": "sub"})
    with pytest.raises(FileCorrupt, match="unreadable object meta"):
        await mesh.files.info("garbage")
    assert {f.name for f in await mesh.files.list()} == {"holed", "short", "forged", "purged"}  # the rest still listed


async def test_chunks_stored_out_of_order_are_repaired(mesh: Mesh, raw: Any) -> None:
    """A chunk the drop lost, overtaken by later ones: those are deleted and stored again after it."""
    await mesh.files.put(b"", name="init")  # the bucket exists
    subject = objects.chunk_subject(objects.BUCKET, "REPAIRTEST")
    datas = [b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 10]
    ids = [f"REPAIRTEST.{i}" for i in range(4)]
    await raw.publish(subject, datas[2], headers={"Nats-Msg-Id": ids[2]})  # stored before 0 and 1
    await raw.publish(subject, datas[3], headers={"Nats-Msg-Id": ids[3]})
    last = await objects._store_window(mesh.link, STREAM, subject, ids, datas, 0, 1e12, "repair")
    sub = await raw.subscribe(subject, ordered_consumer=True)
    stored = [(await sub.next_msg(timeout=5)).data for _ in range(4)]
    assert stored == datas and (await raw.stream_info(STREAM)).state.last_seq == last


async def test_put_survives_a_server_restart_mid_way(nats_server: NatsServer, tmp_path: Path) -> None:
    cfg = MeshConfig(servers=(nats_server.url,), instance_id=unique_id("n"), data_dir=str(tmp_path / "d"))
    data = blob(12 * MiB, seed=5)
    stopped = asyncio.Event()
    stored_before_stop: list[int] = []
    progress: list[int] = []

    async def source() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 64 * 1024):
            if i == 9 * MiB:  # the first 8 MiB window is stored; the rest goes out while the server is down
                stored_before_stop.extend(progress)
                await asyncio.to_thread(nats_server.stop)
                stopped.set()
            yield data[i:i + 64 * 1024]

    async def restart() -> None:
        await stopped.wait()
        await asyncio.to_thread(nats_server.start)

    async with Mesh(cfg) as mesh:
        await mesh.files.put(b"", name="warm")
        pid = nats_server.pid
        put, _ = await asyncio.gather(
            mesh.files.put(source(), name="big", progress=lambda done, _: progress.append(done)), restart())
        assert nats_server.pid != pid and put.size == len(data)
        assert stored_before_stop == [objects.WINDOW * objects.CHUNK_SIZE]  # it was mid-way
        sink = io.BytesIO()
        await mesh.files.get("big", sink)
        assert sink.getvalue() == data


async def test_put_survives_a_server_stopping_while_chunks_are_in_flight(nats_server: NatsServer, tmp_path: Path) -> None:
    """The server shuts down while a window is being sent: some chunks stored, some acks lost, some
    chunks lost. The put still ends with a complete object, every chunk once and in order."""
    cfg = MeshConfig(servers=(nats_server.url,), instance_id=unique_id("n"), data_dir=str(tmp_path / "d"))
    data = blob(24 * MiB, seed=8)
    stopping = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        for i in range(0, len(data), objects.CHUNK_SIZE):
            if i == (objects.WINDOW + 8) * objects.CHUNK_SIZE:
                await stopping.wait()  # the shutdown has begun: the rest of this window races it
            yield data[i:i + objects.CHUNK_SIZE]

    async def restart() -> None:
        loop = asyncio.get_running_loop()
        stopped = loop.run_in_executor(None, nats_server.stop)
        loop.call_soon(stopping.set)
        await stopped
        await asyncio.to_thread(nats_server.start)

    async with Mesh(cfg) as mesh:
        await mesh.files.put(b"", name="warm")
        first_window = asyncio.Event()
        restarts = []

        def progress(done: int, _: int | None) -> None:
            if not first_window.is_set():
                first_window.set()
                restarts.append(asyncio.ensure_future(restart()))

        put = await mesh.files.put(source(), name="big", progress=progress)
        await asyncio.gather(*restarts)
        assert put.size == len(data) and put.chunks == 192
        nc = await nats.connect(nats_server.url)
        try:
            state = await nc.jetstream().stream_info(STREAM, subjects_filter=objects.chunk_subject(objects.BUCKET, (
                await objects.object_info(mesh.link, objects.BUCKET, "big")).nuid))
            assert sum((state.state.subjects or {}).values()) == 192  # no chunk stored twice
        finally:
            await nc.close()
        sink = io.BytesIO()
        await mesh.files.get("big", sink)
        assert sink.getvalue() == data


async def test_memory_stays_bounded_whatever_the_file_size(mesh: Mesh) -> None:
    """128 MiB through put and stream: at most a few windows of chunks are ever held."""
    import tracemalloc

    piece = blob(MiB, seed=9)

    async def source() -> AsyncIterator[bytes]:
        for _ in range(128):
            yield piece

    await mesh.files.put(b"", name="warm")
    tracemalloc.start()
    try:
        await mesh.files.put(source(), name="huge")
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        n = 0
        async for chunk in mesh.files.stream("huge"):
            n += len(chunk)
        get_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 128 * MiB
    assert put_peak < 32 * MiB and get_peak < 32 * MiB, (put_peak, get_peak)


async def test_get_survives_a_server_restart_mid_way(nats_server: NatsServer, tmp_path: Path) -> None:
    cfg = MeshConfig(servers=(nats_server.url,), instance_id=unique_id("n"), data_dir=str(tmp_path / "d"))
    data = blob(6 * MiB, seed=6)
    async with Mesh(cfg) as mesh:
        await mesh.files.put(data, name="big")
        got, restarted = bytearray(), False
        async for chunk in mesh.files.stream("big"):
            got += chunk
            if len(got) >= MiB and not restarted:
                await asyncio.to_thread(nats_server.stop)
                await asyncio.to_thread(nats_server.start)
                restarted = True
        assert restarted and bytes(got) == data  # and the digest check at the end passed


@pytest.mark.timeout(150)
async def test_bucket_replicas_follow_the_cluster(tmp_path: Path) -> None:
    with LocalCluster(3, base_dir=tmp_path / "c", name=unique_id("c")) as cluster:
        cfg = MeshConfig(servers=tuple(cluster.urls), instance_id=unique_id("n"), data_dir=str(tmp_path / "d"))
        async with Mesh(cfg) as mesh:
            await mesh.files.put(b"x" * 1000, name="r3")
            nc = await nats.connect(cluster.urls[0])
            try:
                info = await nc.jetstream().stream_info(STREAM)
            finally:
                await nc.close()
            assert info.config.num_replicas == 3
            assert info.config.allow_rollup_hdrs and info.config.discard == jsapi.DiscardPolicy.NEW
            data = blob(3 * MiB, seed=10)
            await mesh.files.put(data, name="replicated")
        leader = next(s for s in cluster.servers if s.name == info.cluster.leader)
        await asyncio.to_thread(leader.stop)  # the bucket's leader goes: a replica serves the file
        others = tuple(s.url for s in cluster.servers if s is not leader)
        async with Mesh(cfg.replace(servers=others), ensure=False) as mesh:
            async def fetched() -> bytes | None:
                sink = io.BytesIO()
                try:
                    await mesh.files.get("replicated", sink)
                except (MeshTimeout, JetStreamUnavailable):  # the bucket elects a new leader first
                    return None
                return sink.getvalue()

            assert await eventually(fetched, timeout=45) == data


async def test_put_to_a_node_names_it_and_sends_a_sync_notice(mesh: Mesh) -> None:
    target = unique_id("node")
    info = await mesh.files.put(b"hello", name="for-b", to=target)
    assert info.to == target and info.metadata["nxs-from"] == mesh.config.instance_id
    notes = [r.envelope async for r in mesh.tail("sync", instance=target, last=1)]
    assert notes and notes[0] is not None
    assert notes[0].payload.content == {"kind": "file", "name": "for-b", "size": 5, "digest": info.digest,
                                         "bucket": objects.BUCKET}


# -- CLI -----------------------------------------------------------------------------------------------
def nxs(url: str, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--url", url, "--instance-id", "cli-node", *args])
    assert "Traceback" not in result.output, result.output
    return result


def test_cli_put_ls_get_rm(nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = blob(300_000, seed=7)
    (tmp_path / "a.bin").write_bytes(data)
    r = nxs(nats_server.url, "file", "put", "a.bin", "--name", "docs/a.bin", "--to", "node-b")
    assert r.exit_code == 0, r.output
    assert "stored docs/a.bin (293.0 KiB, 3 chunks" in r.stdout and "node-b notified" in r.stdout
    r = nxs(nats_server.url, "file", "ls", "--json")
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert (row["name"], row["size"], row["to"]) == ("docs/a.bin", len(data), "node-b")
    assert "docs/a.bin" in nxs(nats_server.url, "file", "ls").stdout
    r = nxs(nats_server.url, "file", "get", "docs/a.bin", "-o", "b.bin")
    assert r.exit_code == 0 and (tmp_path / "b.bin").read_bytes() == data, r.output
    r = nxs(nats_server.url, "file", "get", "docs/a.bin")  # default: ./<basename>
    assert r.exit_code == 0 and (tmp_path / "a.bin").read_bytes() == data
    r = nxs(nats_server.url, "file", "info", "docs/a.bin", "--json")
    assert json.loads(r.stdout)["chunks"] == 3
    r = nxs(nats_server.url, "file", "rm", "docs/a.bin")
    assert r.exit_code == 0 and "deleted docs/a.bin" in r.stdout
    assert json.loads(nxs(nats_server.url, "file", "ls", "--json").stdout) == []


def test_cli_errors_are_one_line(nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = nxs(nats_server.url, "file", "get", "nope")
    assert r.exit_code == 1 and r.stderr.strip() == "error: no file 'nope' in NXS_FILES"
    r = nxs(nats_server.url, "file", "put", "missing.bin")
    assert r.exit_code == 1 and r.stderr.strip() == "error: missing.bin: no such file"
    r = nxs(nats_server.url, "file", "rm", "nope")
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "nope")


def test_files_example_runs(nats_server: NatsServer, tmp_path: Path) -> None:
    """examples/files.py (the README's Files block) as written, against a real server."""
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NXS_")}, "NXS_URL": nats_server.url,
           "HOME": str(tmp_path)}
    example = Path(__file__).resolve().parent.parent / "examples" / "files.py"
    r = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "same bytes: True" in r.stdout and "['contexts/research.bin'] 5242880" in r.stdout, r.stdout


async def test_bench_files_reports_both_sides() -> None:
    from nxs_cli.bench import BenchOptions, run_bench

    report = await run_bench(["files"], BenchOptions(messages=50, rounds=1))
    rows = {r.scenario: r for r in report.rows}
    assert set(rows) == {"file put", "file get"}, [r.note for r in report.rows]
    for row in rows.values():
        assert row.metric == "MB/s" and row.mesh and row.raw and row.ratio and row.target == ">= 0.9x"
