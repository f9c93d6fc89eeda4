"""Files: put and get throughput of one file through ``mesh.files`` against nats-py's own object store
(``js.object_store(...).put/get``) on the same file, bucket and server, in the same run.

Both read the file from disk and write it back to disk: nats-py's ``put`` reads a binary file with
``readinto`` in an executor, its ``get`` writes into a file (``writeinto``), its best path (without
it, ``get`` concatenates the object in memory). The mesh's ``get`` also fsyncs and renames the
file into place after the digest matched. Rounds alternate mesh and raw; the median round is reported.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from nxs_cli.bench.report import Row, ratio_target
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.throughput import _rounds

from nxs_mesh.transport.object_meta import BUCKET

__all__ = ["bench_files", "file_size"]

MB = 1024 * 1024


def file_size(messages: int) -> int:
    """The file's size: 64 MB at the default 20,000 messages, 1 MB at the smallest runs."""
    return max(1, min(64, messages // 312)) * MB


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for _ in range(size // MB):
            f.write(os.urandom(MB))


def _open(path: Path, mode: str) -> Any:
    return path.open(mode)


async def bench_files(session: BenchSession) -> list[Row]:
    size = file_size(session.options.messages)
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="nxs-bench-files-"))
    try:
        src = tmp / "source.bin"
        await asyncio.to_thread(_write_random, src, size)
        mesh = await session.mesh()
        await mesh.files.put(b"", name=session.unique("warm"))  # the bucket exists
        store = await (await session.raw()).jetstream().object_store(BUCKET)
        names: dict[tuple[str, int], str] = {}

        async def timed(coro: Any) -> float:
            t0 = time.perf_counter()
            await coro
            return size / MB / (time.perf_counter() - t0)

        async def raw_put(name: str) -> None:
            f = await asyncio.to_thread(_open, src, "rb")
            with f:
                await store.put(name, f)

        async def raw_get(name: str, out: Path) -> None:
            f = await asyncio.to_thread(_open, out, "wb")
            with f:
                await store.get(name, writeinto=f)

        async def mesh_put(i: int) -> float:
            names["m", i] = session.unique("file-m")
            return await timed(mesh.files.put(src, name=names["m", i]))

        async def raw_put_run(i: int) -> float:
            names["r", i] = session.unique("file-r")
            return await timed(raw_put(names["r", i]))

        async def mesh_get(i: int) -> float:
            return await timed(mesh.files.get(names["m", i], tmp / "mesh.out"))

        async def raw_get_run(i: int) -> float:
            return await timed(raw_get(names["r", i], tmp / "raw.out"))

        put_m, put_r = await _rounds(session, mesh_put, raw_put_run)
        get_m, get_r = await _rounds(session, mesh_get, raw_get_run)
        for name in names.values():
            await mesh.files.delete(name)
        note = f"{size // MB} MB file, 128 KiB chunks"
        return [
            ratio_target(Row("file put", "MB/s", put_m, put_r, note=note), 0.9),
            ratio_target(Row("file get", "MB/s", get_m, get_r, note=note + "; mesh get fsyncs + renames"), 0.9),
        ]
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
