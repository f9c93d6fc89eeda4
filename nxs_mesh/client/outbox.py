"""The offline outbox: publishes wait on local disk while no server with JetStream quorum answers.

Nothing acknowledged to a caller is lost: ``Mesh.publish`` either returns a stream sequence (stored
by a JetStream quorum) or ``queued=True`` (committed to this SQLite file with ``synchronous=FULL``).
The flusher (owned by the ``Mesh``) sends queued messages oldest first with their original
``Nats-Msg-Id``, so a message that reached the stream before a fault and is sent again is dropped
by the stream's duplicate window instead of being stored twice.

    box = Outbox("/var/lib/nxs/outbox.sqlite", max_messages=50_000)
    box.put(subject, data, headers)          # raises OutboxFull at the bound
    for item in box.peek(10): ...

One file per node (the worker puts it under its data dir). SQLite calls are synchronous: each is a
small indexed write or read, cheaper than handing it to a thread, and it keeps the order trivial.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nxs_mesh.aio.retry import backoff_delay
from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.wire.errors import MeshError, OutboxFull

__all__ = [
    "DEFAULT_MAX_BYTES", "DEFAULT_MAX_MESSAGES", "Outbox", "OutboxFlusher", "OutboxItem", "OutboxStats", "outbox_path",
]

log = logging.getLogger("nxs_mesh.client.outbox")

DEFAULT_MAX_MESSAGES = 100_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    subject    TEXT NOT NULL,
    stream     TEXT NOT NULL DEFAULT '',
    headers    TEXT NOT NULL,
    data       BLOB NOT NULL,
    queued_at  REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    message_id: str
    subject: str
    stream: str
    headers: dict[str, str]
    data: bytes
    queued_at: float  # wall-clock seconds (for display only)
    attempts: int
    last_error: str

    def as_dict(self, *, with_data: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "seq": self.seq, "message_id": self.message_id, "subject": self.subject, "stream": self.stream,
            "queued_at": self.queued_at, "age_s": round(max(0.0, time.time() - self.queued_at), 3),
            "attempts": self.attempts, "last_error": self.last_error, "bytes": len(self.data),
        }
        if with_data:
            out["data"] = self.data.decode("utf-8", errors="replace")
        return out


@dataclass(frozen=True)
class OutboxStats:
    path: str
    messages: int
    bytes: int
    max_messages: int
    max_bytes: int
    oldest_age_s: float | None


class Outbox:
    """A bounded, ordered, on-disk queue of publishes keyed by ``message_id`` (put is idempotent)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Private from the start (sqlite gives its -wal/-shm files the database file's mode): queued
        # messages are the node's traffic, not for other users of the machine.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._lock = threading.Lock()  # the CLI and tests may read from another thread
        import sqlite3  # here, not at the top: a node that never queues offline never loads it

        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        # WAL + FULL: a committed put survives a crash or power loss; readers (`nxs outbox`) never block it.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM outbox").fetchone()

    def __repr__(self) -> str:
        return f"<Outbox {self.path} [{self._count} queued, {self._bytes} bytes]>"

    def __len__(self) -> int:
        return int(self._count)

    @property
    def size_bytes(self) -> int:
        return int(self._bytes)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(
        self, subject: str, data: bytes, headers: Mapping[str, str], *, message_id: str, stream: str = ""
    ) -> bool:
        """Queue one message; False if this ``message_id`` is already queued. Raises ``OutboxFull``."""
        with self._lock:
            if self._count + 1 > self.max_messages or self._bytes + len(data) > self.max_bytes:
                if self._db.execute("SELECT 1 FROM outbox WHERE message_id=?", (message_id,)).fetchone():
                    return False
                raise OutboxFull(
                    f"the offline outbox {self.path} is full ({self._count} messages, {self._bytes} bytes; "
                    f"bound {self.max_messages} messages / {self.max_bytes} bytes): no JetStream quorum has "
                    "been reachable for a while; restore connectivity or raise the bound"
                )
            cur = self._db.execute(
                "INSERT OR IGNORE INTO outbox (message_id, subject, stream, headers, data, queued_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, subject, stream, json.dumps(dict(headers)), data, time.time()),
            )
            if cur.rowcount:
                self._count += 1
                self._bytes += len(data)
            return bool(cur.rowcount)

    def peek(self, limit: int = 100) -> list[OutboxItem]:
        """The oldest ``limit`` messages, in queue order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, message_id, subject, stream, headers, data, queued_at, attempts, last_error "
                "FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [OutboxItem(r[0], r[1], r[2], r[3], json.loads(r[4]), bytes(r[5]), r[6], r[7], r[8]) for r in rows]

    def remove(self, seqs: list[int]) -> None:
        """Forget messages the stream has stored (their ``seq`` from ``peek``)."""
        if not seqs:
            return
        with self._lock:
            marks = ",".join("?" * len(seqs))
            removed, size = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM outbox WHERE seq IN ({marks})", seqs
            ).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", seqs)
            self._count -= removed
            self._bytes -= size

    def note_failure(self, seq: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?", (error[:500], seq))

    def stats(self) -> OutboxStats:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(queued_at) FROM outbox").fetchone()[0]
        return OutboxStats(
            str(self.path), int(self._count), int(self._bytes), self.max_messages, self.max_bytes,
            None if oldest is None else round(max(0.0, time.time() - oldest), 3),
        )

    def clear(self) -> int:
        """Drop everything queued (operator action, `nxs outbox clear`); returns how many."""
        with self._lock:
            n = int(self._count)
            self._db.execute("DELETE FROM outbox")
            self._count, self._bytes = 0, 0
        return n


SendWindow = Callable[[list[OutboxItem]], Awaitable[list[BaseException | None]]]


class OutboxFlusher:
    """Sends what waits in an ``Outbox``, oldest first, whenever it is woken (a put, a reconnect) or
    every ``poll`` seconds (a quorum may come back without any reconnect).

    ``send(items)`` publishes a window and returns one exception-or-None per item. The flusher removes
    the longest stored prefix and retries the rest later, so order is kept except when a fault hits in
    the middle of a window (the later messages of that window are then already stored; their re-send is
    a duplicate the stream drops by ``Nats-Msg-Id``).
    """

    def __init__(self, outbox: Outbox, send: SendWindow, *, window: int = 64, poll: float = 1.0) -> None:
        self.outbox, self._send, self.window, self.poll = outbox, send, window, poll
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._sup = Supervisor(f"outbox {outbox.path.name}")
        self._started = False
        self._stopping = False
        self._failures = 0
        self.sent = 0
        self.last_error = ""
        self.last_drain_s: float | None = None  # how long the last non-empty -> empty drain took
        if not len(outbox):
            self._empty.set()

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"<OutboxFlusher {state} [{len(self.outbox)} queued, {self.sent} sent]>"

    def start(self) -> None:
        """Start flushing (a supervised loop: if it dies it is logged and restarted)."""
        if not self._started:
            self._started = True
            self._sup.keep("flush", self._run)

    @property
    def problems(self) -> dict[str, str]:
        return self._sup.problems

    async def stop(self) -> None:
        """Stop flushing; what is still queued stays on disk."""
        self._stopping = True
        self._wake.set()
        self._started = False
        await self._sup.stop(timeout=0)

    def wake(self) -> None:
        """Something was queued or the connection came back: try now."""
        if len(self.outbox):
            self._empty.clear()
        self._wake.set()

    async def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued; False on timeout."""
        self.wake()
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()
            if not len(self.outbox):
                self._empty.set()
                continue
            started = time.monotonic()
            while len(self.outbox) and not self._stopping:
                if not await self._flush_window():
                    break
            if not len(self.outbox):
                self.last_drain_s = round(time.monotonic() - started, 3)
                self._empty.set()

    async def _flush_window(self) -> bool:
        items = self.outbox.peek(self.window)
        try:
            errors = await self._send(items)
        except MeshError as exc:  # the whole window failed (not connected, ...)
            errors = [exc] * len(items)
        done = []
        for item, err in zip(items, errors, strict=True):
            if err is not None:
                self.last_error = f"{type(err).__name__}: {err}"
                self.outbox.note_failure(item.seq, self.last_error)
                break
            done.append(item.seq)
        self.outbox.remove(done)
        self.sent += len(done)
        if len(done) == len(items):
            self._failures = 0
            return True
        self._failures += 1
        # Back off before the next try unless woken (by a reconnect, say).
        delay = backoff_delay(self._failures, base=0.05, cap=self.poll, jitter=False)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        return False


def outbox_path(data_dir: str | os.PathLike[str], instance_id: str) -> Path:
    """Where a node keeps its outbox: ``<data_dir>/outbox-<instance_id>.sqlite`` (worker and CLI agree)."""
    return Path(data_dir) / f"outbox-{instance_id}.sqlite"
