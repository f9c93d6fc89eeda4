"""The Object Store's wire format (ADR-20), one home for it: stream and subject names, the digest,
and an object's meta document as the Go client, `nats object` and nats-py write it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Final

from nxs_mesh.wire.errors import FileCorrupt

__all__ = ["BUCKET", "CHUNK_SIZE", "DIGEST_PREFIX", "StoredObject", "chunk_subject", "digest_bytes", "digest_of",
           "meta_subject", "stream_name"]

BUCKET: Final = "NXS_FILES"
CHUNK_SIZE: Final = 128 * 1024  # the Go client's and nats-py's default
DIGEST_PREFIX: Final = "SHA-256="


def stream_name(bucket: str) -> str:
    return f"OBJ_{bucket}"


def meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


def digest_of(sha: bytes) -> str:
    return DIGEST_PREFIX + base64.urlsafe_b64encode(sha).decode()


def digest_bytes(text: str) -> bytes | None:
    """The raw SHA-256 of a meta's ``digest`` (``SHA-256=<urlsafe b64>``, padded or not), None if unreadable."""
    if text[: len(DIGEST_PREFIX)].upper() != DIGEST_PREFIX:
        return None
    body = text[len(DIGEST_PREFIX):]
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        return None


@dataclass(frozen=True)
class StoredObject:
    """An object's meta as stored (the Object Store's ObjectInfo)."""

    name: str
    bucket: str
    nuid: str
    size: int
    chunks: int
    digest: str
    mtime: str = ""
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    deleted: bool = False
    max_chunk_size: int = CHUNK_SIZE
    link: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "name": self.name, "description": self.description or None, "bucket": self.bucket, "nuid": self.nuid,
            "size": self.size, "mtime": self.mtime, "chunks": self.chunks, "digest": self.digest,
            "options": {"max_chunk_size": self.max_chunk_size},
        }
        if self.metadata:
            doc["metadata"] = self.metadata
        if self.deleted:
            doc["deleted"] = True
        return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> StoredObject:
        try:
            doc = json.loads(data)
            options = doc.get("options") or {}
            return cls(
                name=str(doc["name"]), bucket=str(doc.get("bucket") or ""), nuid=str(doc.get("nuid") or ""),
                size=int(doc.get("size") or 0), chunks=int(doc.get("chunks") or 0),
                digest=str(doc.get("digest") or ""), mtime=str(doc.get("mtime") or ""),
                description=str(doc.get("description") or ""),
                metadata={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
                deleted=bool(doc.get("deleted", False)),
                max_chunk_size=int(options.get("max_chunk_size") or CHUNK_SIZE), link=options.get("link"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FileCorrupt(f"{where}: unreadable object meta ({exc})") from None
