"""JetStream key-value buckets with compare-and-set, the way the mesh uses them (claims, elections).

    bucket = await open_bucket(link, BucketSpec("NXS_TASKS", ttl=86400), replicas=3)
    rev = await bucket.create("t.123", b"...")        # None if the key exists
    rev = await bucket.update("t.123", b"...", last=rev)  # None if someone wrote since
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import api as jsapi
from nats.js import errors as jse
from nats.js.kv import KeyValue

from nxs_mesh.transport.link import Link
from nxs_mesh.transport.translate import translate_nats_errors

__all__ = ["Bucket", "BucketSpec", "Entry", "open_bucket"]


@dataclass(frozen=True)
class BucketSpec:
    name: str
    ttl: float = 0.0  # seconds a key lives (0 = forever)
    history: int = 1
    description: str = ""


@dataclass(frozen=True)
class Entry:
    value: bytes
    revision: int


class Bucket:
    """One KV bucket; every write is create-only or compare-and-set on the last revision.

    Bound to the link's connection of the moment: after the link was reopened it binds again."""

    def __init__(self, name: str, kv: KeyValue, link: Link) -> None:
        self.name, self._kv_now, self._link = name, kv, link
        self._generation = link.generation

    async def _bound(self) -> KeyValue:
        if self._generation != self._link.generation:
            with translate_nats_errors(f"bucket {self.name}"):
                self._kv_now = await self._link.js.key_value(self.name)
            self._generation = self._link.generation
        return self._kv_now

    def __repr__(self) -> str:
        return f"<Bucket {self.name}>"

    async def get(self, key: str) -> Entry | None:
        with translate_nats_errors(f"{self.name} read"):
            try:
                entry = await (await self._bound()).get(key)
            except (jse.KeyNotFoundError, jse.KeyDeletedError):
                return None
        return Entry(entry.value or b"", int(entry.revision or 0))

    async def create(self, key: str, value: bytes) -> int | None:
        """Write ``key`` only if it does not exist; its revision, or None if it does."""
        with translate_nats_errors(f"{self.name} write"):
            try:
                return int(await (await self._bound()).create(key, value))
            except jse.KeyWrongLastSequenceError:
                return None

    async def keys(self) -> list[str]:
        """Every key that holds a value now ([] when none does)."""
        with translate_nats_errors(f"{self.name} read"):
            try:
                return list(await (await self._bound()).keys())
            except jse.NoKeysError:
                return []

    async def update(self, key: str, value: bytes, *, last: int) -> int | None:
        """Write ``key`` only if it is still at revision ``last``; the new revision, or None."""
        with translate_nats_errors(f"{self.name} write"):
            try:
                return int(await (await self._bound()).update(key, value, last=last))
            except jse.KeyWrongLastSequenceError:
                return None


async def open_bucket(link: Link, spec: BucketSpec, *, replicas: int) -> Bucket:
    """Bind to the bucket, creating it when it does not exist (idempotent)."""
    with translate_nats_errors(f"bucket {spec.name}"):
        try:
            kv = await link.js.key_value(spec.name)
        except jse.BucketNotFoundError:
            kv = await link.js.create_key_value(jsapi.KeyValueConfig(
                bucket=spec.name, history=spec.history, ttl=spec.ttl or None, replicas=replicas,
                description=spec.description))
    return Bucket(spec.name, kv, link)
