"""Sources and sinks of ``mesh.files``: paths, binary file objects and async iterators, read and written
in chunks off the event loop, so a file of any size passes through a bounded amount of memory.

A get into a path writes a temporary file next to it and renames it into place only after the whole
object was read and its SHA-256 matched: the path never holds partial or unverified data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any, cast

from nxs_mesh.wire.errors import FileError

__all__ = ["Sink", "Source", "open_source", "write_to"]

#: What ``put`` accepts: a path, a binary file object, bytes, or an async iterable of bytes.
Source = str | os.PathLike[str] | IO[bytes] | bytes | AsyncIterable[bytes]
#: What ``get`` writes to: a path or a binary file object.
Sink = str | os.PathLike[str] | IO[bytes]


async def _read_file(f: IO[bytes], chunk_size: int) -> AsyncGenerator[bytes, None]:
    while data := await asyncio.to_thread(f.read, chunk_size):
        yield data


async def _read_path(path: Path, chunk_size: int) -> AsyncGenerator[bytes, None]:
    f = await asyncio.to_thread(path.open, "rb")
    try:
        async for data in _read_file(f, chunk_size):
            yield data
    finally:
        f.close()


async def _rechunk(source: AsyncIterable[bytes], chunk_size: int) -> AsyncGenerator[bytes, None]:
    """Pieces of any size in, chunks of exactly ``chunk_size`` out (the last one shorter)."""
    buf = bytearray()
    async for piece in source:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise FileError(f"an async source must yield bytes, got {type(piece).__name__}")
        buf += piece
        while len(buf) >= chunk_size:
            yield bytes(buf[:chunk_size])
            del buf[:chunk_size]
    if buf:
        yield bytes(buf)


async def _one(data: bytes, chunk_size: int) -> AsyncGenerator[bytes, None]:
    for i in range(0, len(data), chunk_size):
        yield data[i:i + chunk_size]


def open_source(source: Source, chunk_size: int) -> tuple[AsyncGenerator[bytes, None], int | None, str | None]:
    """(chunks, total size if known, a default name) for ``source``."""
    if isinstance(source, bytes | bytearray):
        return _one(bytes(source), chunk_size), len(source), None
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
        return _read_path(path, chunk_size), path.stat().st_size, path.name
    if hasattr(source, "read"):
        f = cast(IO[bytes], source)
        return _read_file(f, chunk_size), _remaining(f), Path(str(getattr(f, "name", ""))).name or None
    if hasattr(source, "__aiter__"):
        return _rechunk(source, chunk_size), None, None
    raise FileError(f"cannot put a {type(source).__name__}: give a path, a binary file, bytes or an async iterator")


def _remaining(f: IO[bytes]) -> int | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if f.seekable():
            here = f.tell()
            end = f.seek(0, os.SEEK_END)
            f.seek(here)
            return end - here
    return None


async def write_to(sink: Sink, chunks: AsyncIterator[bytes], *, mode: int = 0o644) -> int:
    """Write ``chunks`` to ``sink``; bytes written. A path is replaced only once ``chunks`` ended cleanly."""
    if not isinstance(sink, str | os.PathLike):
        return await _write_file(sink, chunks)
    target = Path(sink)
    fd, tmp = await asyncio.to_thread(_temp_beside, target)
    try:
        with os.fdopen(fd, "wb") as f:
            n = await _write_file(f, chunks)
            await asyncio.to_thread(_sync, f)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return n


def _temp_beside(target: Path) -> tuple[int, str]:
    if target.is_dir():
        raise FileError(f"{target}: is a directory; give a file path")
    if not target.parent.is_dir():
        raise FileError(f"{target.parent}: no such directory")
    return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)


def _sync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


async def _write_file(f: IO[bytes], chunks: AsyncIterator[bytes]) -> int:
    n = 0
    write: Callable[[Any], Any] = f.write
    async for data in chunks:
        await asyncio.to_thread(write, data)
        n += len(data)
    return n
