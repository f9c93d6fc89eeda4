"""The task records: the KV bucket NXS_TASKS, one key ``t.<task id>`` per task, written by compare-and-set.

A task is ``submitted`` while ``t.<task id>`` is absent (the submitter's own facts, who, when, ttl and
where its RESULT goes, are in ``s.<task id>``, written once; a program that does not write it is fine),
then ``claimed`` (a worker's claim; its revision is the fencing token, see ``node.tasks``), then in one
terminal state (``TERMINAL``). The submission has its own key so that ``t.<task id>`` keeps meaning
"a worker took it" for everyone who reads it. Every record names the node that wrote it
(``node``); with a key, the writer signs it (``wire.signing.sign_record``), and a reader that has a
trust file believes a record only when it is signed by the key the trust file lists for that node,
or by the admin key. The bucket also holds the doctors' release elections (``elect``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, Final, Protocol

from nxs_mesh.client.admin import Bucket, BucketSpec, MeshAdmin
from nxs_mesh.client.calls import Accept
from nxs_mesh.client.publishing import PublishResult
from nxs_mesh.client.security import MessageSecurity
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.link import Link
from nxs_mesh.transport.reader import Record
from nxs_mesh.wire.envelope import Envelope, Source
from nxs_mesh.wire.signing import record_signed_by, sign_record

__all__ = ["BUCKET", "COMPLETED", "TERMINAL", "TaskMesh", "TaskStore", "kv_safe", "state_name"]

log = logging.getLogger("nxs_mesh.client.task_store")

BUCKET: Final = "NXS_TASKS"
#: The end states of a task record; ``done`` is the record's (historical) name for completed.
TERMINAL: Final = frozenset({"done", "failed", "expired", "cancelled", "orphaned"})
COMPLETED: Final = "completed"


def state_name(record_state: str) -> str:
    """The state as callers see it (``metadata.state``, ``nxs task status``): ``done`` reads ``completed``."""
    return COMPLETED if record_state == "done" else record_state


def kv_safe(value: str) -> str:
    return value.replace(":", "=")  # ids may hold ':', KV keys may not


class TaskMesh(Protocol):
    """What the task modules use of a ``Mesh`` (a Protocol, so that ``Mesh`` can mix them in without an
    import cycle)."""

    config: MeshConfig
    security: MessageSecurity
    source: Source
    grant: str | None

    @property
    def admin(self) -> MeshAdmin: ...

    @property
    def link(self) -> Link: ...

    async def send(self, env: Envelope, *, subject: str | None = None, msgpack: bool = False,
                   seal: bool = False) -> PublishResult: ...

    async def publish(self, message_type: str, content: Any = "", *, to: str = "*", priority: int = 1, ttl: int = 300,
                      correlation_id: str | None = None, reply_to: str | None = None,
                      message_id: uuid.UUID | str | None = None, capability: str | None = None) -> PublishResult: ...

    async def call(self, message_type: str, content: Any, *, correlation_id: str, timeout: float, waiting_for: str,
                   accept: Accept | None = None, watch: str | None = None,
                   **publish: Any) -> tuple[PublishResult, Envelope]: ...

    async def publish_many(self, envelopes: Iterable[Envelope], *, msgpack: bool = False) -> list[PublishResult]: ...

    def tail(self, kind: str) -> AsyncIterator[Record]: ...

    async def task_store(self) -> TaskStore: ...


class TaskStore:
    """The NXS_TASKS key-value bucket: task records with fencing, and doctor elections."""

    def __init__(self, bucket: Bucket, security: MessageSecurity | None = None) -> None:
        self._bucket, self._security = bucket, security

    def __repr__(self) -> str:
        return f"<TaskStore {self._bucket.name}>"

    @classmethod
    async def open(cls, mesh: TaskMesh, *, replicas: int | None = None) -> TaskStore:
        spec = BucketSpec(BUCKET, ttl=86400.0, description="task records (fencing) and doctor elections")
        return cls(await mesh.admin.bucket(spec, replicas=replicas), mesh.security)

    async def get(self, task_id: str) -> tuple[dict[str, Any] | None, int]:
        """The record of ``task_id`` (claimed or ended; None while unclaimed) and its revision; a record
        its writer did not sign (when the mesh has a trust file: a forged claim or ``done``) reads as
        absent, so the next writer replaces it."""
        return await self._read(f"t.{task_id}")

    async def submission(self, task_id: str) -> dict[str, Any] | None:
        """What the submitter recorded (``s.<task id>``: submitter, time, ttl, reply subject), or None."""
        return (await self._read(f"s.{task_id}"))[0]

    async def record_submission(self, task_id: str, record: dict[str, Any]) -> bool:
        """Write the submission once (a resubmission keeps the first); False when one exists."""
        return await self._write(f"s.{task_id}", record, 0) is not None

    async def _read(self, key: str) -> tuple[dict[str, Any] | None, int]:
        entry = await self._bucket.get(key)
        if entry is None:
            return None, 0
        try:
            record = json.loads(entry.value or b"{}")
        except ValueError:
            return None, entry.revision
        if not isinstance(record, dict) or not self._believes(key, record, entry.value):
            log.warning("%s: ignoring a record its writer did not sign (%s)", key,
                        record.get("node") if isinstance(record, dict) else "not an object")
            return None, entry.revision
        return record, entry.revision

    def _believes(self, key: str, record: dict[str, Any], value: bytes) -> bool:
        sec = self._security
        if sec is None or sec.trust is None or ("sig" not in record and not sec.secure):
            return True  # no keys to check against, or an unsigned record in an open mesh
        node, signer = record.get("node"), record.get("signer")
        return (isinstance(node, str) and isinstance(signer, str)
                and (signer == sec.trust.signer_of(node) or sec.trust.is_admin(signer))
                and record_signed_by(signer, key, value))

    @property
    def checks_signers(self) -> bool:
        """Whether records are checked against a trust file (who wrote them matters)."""
        return self._security is not None and self._security.trust is not None

    def signed_by_admin(self, record: dict[str, Any]) -> bool:
        """Whether a record ``get`` returned was signed by the admin key (checked there)."""
        sec = self._security
        return sec is not None and sec.trust is not None and sec.trust.is_admin(record.get("signer"))

    async def cas(self, task_id: str, record: dict[str, Any], last: int) -> int | None:
        """Write ``record`` if the key is still at revision ``last`` (0 = absent); None if not. Signed by
        this node when it has a key (``wire.signing.sign_record``)."""
        return await self._write(f"t.{task_id}", record, last)

    async def _write(self, key: str, record: dict[str, Any], last: int) -> int | None:
        sec = self._security
        signer = sec.signer if sec is not None else None
        if signer is not None:
            body = json.dumps({**record, "signer": signer.public}, separators=(",", ":")).encode()
            data = sign_record(signer, key, body)
        else:
            data = json.dumps(record, separators=(",", ":")).encode()
        if last == 0:
            return await self._bucket.create(key, data)
        return await self._bucket.update(key, data, last=last)

    async def elect(self, key: str, who: str) -> bool:
        """True for exactly one caller of ``key`` (within the bucket's ttl)."""
        safe = kv_safe(key)
        if await self._bucket.create(safe, who.encode()) is not None:
            return True
        # Ours already if an earlier attempt was stored but its answer was lost.
        entry = await self._bucket.get(safe)
        return entry is not None and entry.value == who.encode()
