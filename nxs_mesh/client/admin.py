"""``mesh.admin``: managing the mesh's JetStream assets without touching nats-py.

    report = await mesh.admin.stream("NXS_CHAT")        # StreamReport or None
    await mesh.admin.purge("NXS_DLQ")
    bucket = await mesh.admin.bucket(BucketSpec("NXS_TASKS", ttl=86400))
"""

from __future__ import annotations

from nxs_mesh.config import MeshConfig
from nxs_mesh.transport import admin
from nxs_mesh.transport.admin import AccountReport, ConsumerReport, StreamReport
from nxs_mesh.transport.buckets import Bucket, BucketSpec, open_bucket
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.pull import provision_consumer
from nxs_mesh.transport.reader import Record
from nxs_mesh.transport.streams import STREAMS, EnsureResult, StreamSpec, stream_for_kind

__all__ = [
    "STREAMS", "AccountReport", "Bucket", "BucketSpec", "ConsumerReport", "EnsureResult", "MeshAdmin", "Record", "StreamReport",
    "StreamSpec", "stream_for_kind",
]


class MeshAdmin:
    """Stream, consumer and bucket operations on one open connection."""

    def __init__(self, link: Link, config: MeshConfig) -> None:
        self._link, self._config = link, config

    def __repr__(self) -> str:
        return f"<MeshAdmin {self._link!r}>"

    async def stream(self, name: str) -> StreamReport | None:
        """The stream's state, or None when it does not exist."""
        return await admin.stream_report(self._link, name)

    async def purge(self, name: str) -> int:
        """Delete every message of stream ``name``; returns how many there were."""
        return await admin.purge_stream(self._link, name)

    async def consumer(self, stream: str, name: str) -> ConsumerReport | None:
        return await admin.consumer_report(self._link, stream, name)

    async def consumers(self, stream: str) -> list[ConsumerReport]:
        return await admin.consumer_reports(self._link, stream)

    async def account(self) -> AccountReport:
        return await admin.account_report(self._link)

    async def find_stream(self, subject: str) -> str | None:
        """The stream that stores ``subject``, or None when none does."""
        return await admin.find_stream(self._link, subject)

    async def message(self, stream: str, seq: int, *, subject: str | None = None, next_: bool = False) -> Record | None:
        return await admin.get_message(self._link, stream, seq, subject=subject, next_=next_)

    async def delete_message(self, stream: str, seq: int) -> None:
        await admin.delete_message(self._link, stream, seq)

    async def release(self, ack_subjects: list[str]) -> int:
        """Hand deliveries held by another (dead) consumer member back to the stream now."""
        return await admin.release(self._link, ack_subjects)

    async def provision_consumer(self, stream: str, durable: str, filters: tuple[str, ...], *,
                                 batch: int, ack_wait: float | None = None) -> None:
        """Create or update someone else's durable pull consumer (admin provisioning a secure node's)."""
        await provision_consumer(self._link, stream, durable, filters, ack_wait=ack_wait or self._config.ack_wait,
                                 batch=batch)

    async def bucket(self, spec: BucketSpec, *, replicas: int | None = None) -> Bucket:
        """Bind to (or create) a key-value bucket; replicas default to min(3, cluster size)."""
        if replicas is None:
            info = self._link.server_info()
            replicas = self._config.replicas or (max(1, len(info.connect_urls)) if info.cluster else 1)
        return await open_bucket(self._link, spec, replicas=min(3, replicas))
