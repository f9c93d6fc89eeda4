"""Files in the mesh: the NATS Object Store bucket ``NXS_FILES``, streamed both ways (``mesh.files``).

    async with Mesh(config) as mesh:
        info = await mesh.files.put("report.pdf", progress=lambda done, total: print(done, total))
        await mesh.files.get("report.pdf", "/tmp/report.pdf")      # renamed into place once verified
        async for chunk in mesh.files.stream("report.pdf"): ...      # or chunk by chunk
        print([f.name for f in await mesh.files.list()])
        await mesh.files.delete("report.pdf")

Replicated like the streams (``MeshConfig.replicas``, else min(3, cluster size)); every read checks
the chunk count, size and SHA-256 (``FileCorrupt`` otherwise); a dropped connection is retried. The
objects are plain Object Store objects: ``nats object get NXS_FILES report.pdf`` reads them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from nxs_mesh.client.file_io import Sink, Source, open_source, write_to
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport import objects
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.objects import BUCKET, CHUNK_SIZE, Progress, StoredObject
from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import FileError

__all__ = ["FILE_NOTICE", "TO_KEY", "FileInfo", "MeshFiles"]

#: Metadata key naming the node a file is meant for (``put(..., to=node)``).
TO_KEY = "nxs-to"
FROM_KEY = "nxs-from"
#: ``kind`` of the SYNC notice sent to that node.
FILE_NOTICE = "file"
_MAX_CHUNK = 1024 * 1024


class _Mesh(Protocol):
    """What files need of ``Mesh`` (a protocol: ``client.mesh`` imports this module)."""

    config: MeshConfig

    @property
    def link(self) -> Link: ...

    def cluster_size(self) -> int: ...

    async def publish(self, message_type: str, content: Any = "", *, to: str = "*") -> Any: ...


@dataclass(frozen=True)
class FileInfo:
    """A stored file as ``list``/``info``/``put`` report it."""

    name: str
    size: int
    chunks: int
    digest: str
    mtime: str
    description: str
    metadata: dict[str, str]
    bucket: str

    @property
    def to(self) -> str | None:
        """The node the file was put for (``put(..., to=...)``), if any."""
        return self.metadata.get(TO_KEY)

    @classmethod
    def of(cls, o: StoredObject) -> FileInfo:
        return cls(o.name, o.size, o.chunks, o.digest, o.mtime, o.description, dict(o.metadata), o.bucket)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "chunks": self.chunks, "digest": self.digest,
                "mtime": self.mtime, "description": self.description, "metadata": self.metadata,
                "bucket": self.bucket, "to": self.to}


def check_name(name: str) -> str:
    if not name or len(name) > 1024 or any(c in name for c in "\x00\r\n"):
        raise FileError(f"bad file name {name!r}: 1..1024 characters, no NUL or line breaks")
    return name


class MeshFiles:
    """The mesh's Object Store bucket; made by ``mesh.files``. The bucket is ensured on first use."""

    def __init__(self, mesh: _Mesh, bucket: str = BUCKET) -> None:
        self._mesh, self.bucket = mesh, bucket
        self._ensured_gen = -1

    def __repr__(self) -> str:
        return f"<MeshFiles {self.bucket} [{self._mesh.config.instance_id}]>"

    async def ensure(self) -> str:
        """Create the bucket now (admin provisioning); "created", "updated" or "unchanged"."""
        n = self._mesh.config.replicas or self._mesh.cluster_size()
        action = await objects.ensure_bucket(self._mesh.link, self.bucket, replicas=min(3, n))
        self._ensured_gen = self._mesh.link.generation
        return action

    async def _link(self) -> Link:
        link = self._mesh.link
        if self._ensured_gen != link.generation:
            n = self._mesh.config.replicas or self._mesh.cluster_size()
            await objects.ensure_bucket(link, self.bucket, replicas=min(3, n))
            self._ensured_gen = link.generation
        return link

    async def put(
        self, source: Source, *, name: str | None = None, description: str = "",
        metadata: dict[str, str] | None = None, to: str | None = None, progress: Progress | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> FileInfo:
        """Store ``source`` (a path, binary file, bytes or async iterator of bytes) as ``name`` (default:
        the file's name), replacing an older file of that name once complete.

        ``to``: the node the file is for: named in its metadata, and that node gets a SYNC notice
        (content ``{"kind": "file", "name": .., "size": .., "digest": ..}``).
        ``progress(done_bytes, total_bytes)`` is called as chunks are stored (total None if unknown)."""
        if not 1 <= chunk_size <= _MAX_CHUNK:
            raise FileError(f"chunk_size {chunk_size}: between 1 and {_MAX_CHUNK} bytes")
        chunks, total, default = open_source(source, chunk_size)
        name = check_name(name or default or "")
        meta = dict(metadata or {})
        if to is not None:
            meta[TO_KEY] = check_id(to, "to")
            meta[FROM_KEY] = self._mesh.config.instance_id
        link = await self._link()
        async with contextlib.aclosing(chunks):
            stored = await objects.put_object(link, self.bucket, name, chunks, description=description, metadata=meta,
                                              total=total, progress=progress, chunk_size=chunk_size)
        info = FileInfo.of(stored)
        if to is not None:
            await self._mesh.publish("SYNC", {"kind": FILE_NOTICE, "name": name, "size": info.size,
                                              "digest": info.digest, "bucket": self.bucket}, to=to)
        return info

    async def get(self, name: str, dest: Sink, *, progress: Progress | None = None) -> FileInfo:
        """Write file ``name`` to ``dest`` (a path, replaced only after the digest matched, or a binary
        file object); raises ``FileNotFound`` or ``FileCorrupt``."""
        link = await self._link()
        stored = await objects.object_info(link, self.bucket, check_name(name))
        async with contextlib.aclosing(objects.read_object(link, stored, progress=progress)) as chunks:
            await write_to(dest, chunks)
        return FileInfo.of(stored)

    async def stream(self, name: str, *, progress: Progress | None = None) -> AsyncIterator[bytes]:
        """Yield file ``name`` chunk by chunk. The digest is checked after the last chunk: a
        ``FileCorrupt`` then means what was yielded must be discarded."""
        link = await self._link()
        stored = await objects.object_info(link, self.bucket, check_name(name))
        async with contextlib.aclosing(objects.read_object(link, stored, progress=progress)) as chunks:
            async for data in chunks:
                yield data

    async def info(self, name: str) -> FileInfo:
        """The file's meta; ``FileNotFound`` if there is none."""
        return FileInfo.of(await objects.object_info(await self._link(), self.bucket, check_name(name)))

    async def list(self) -> list[FileInfo]:
        """Every file in the bucket (deleted ones left out)."""
        return [FileInfo.of(o) for o in await objects.list_objects(await self._link(), self.bucket)]

    async def delete(self, name: str) -> FileInfo:
        """Delete file ``name`` (its chunks are purged); ``FileNotFound`` if there is none."""
        return FileInfo.of(await objects.delete_object(await self._link(), self.bucket, check_name(name)))
