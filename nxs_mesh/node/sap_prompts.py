"""What the front door reads from a protocol prompt, and how a prompt's end is told (``node.sap``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.node.handlers import Context
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import DEFAULT_TTL, REQUEST_PRIORITY
from nxs_mesh.wire.envelope import Envelope, decode
from nxs_mesh.wire.errors import EnvelopeError, HandlerSignal, Reject

__all__ = ["PromptFields", "ResultWatch", "final_failure", "replay_text"]

_STEERING = ("message_id", "priority", "ttl")
_MAX_ID = 128


@dataclass(frozen=True)
class PromptFields:
    """The extra envelope fields (§5.6) that steer a prompt in the mesh, checked."""

    message_id: str | None = None
    priority: int = REQUEST_PRIORITY  # a prompt is a request: it jumps a backlog of ordinary work
    ttl: int = DEFAULT_TTL
    rest: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def read(cls, extras: dict[str, Any]) -> PromptFields:
        """Raises ValueError naming the field that is wrong."""
        mid, priority, ttl = extras.get("message_id"), extras.get("priority", REQUEST_PRIORITY), extras.get("ttl", DEFAULT_TTL)
        if mid is not None and not (isinstance(mid, str) and 0 < len(mid) <= _MAX_ID):
            raise ValueError(f"message_id must be a string of 1..{_MAX_ID} characters, got {mid!r}")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
            raise ValueError(f"priority must be an integer 0..9, got {priority!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise ValueError(f"ttl must be a whole number of seconds >= 0 (0 = never expires), got {ttl!r}")
        rest = tuple((k, v) for k, v in extras.items() if k not in _STEERING)
        return cls(mid, priority, ttl, rest)

    def args(self, envelope: Any) -> dict[str, Any]:
        """The COMMAND's args: what the ``prompt`` handler gets."""
        out: dict[str, Any] = {"prompt": envelope.prompt}
        if envelope.attachments:
            out["attachments"] = [a.model_dump() for a in envelope.attachments]
        if self.rest:
            out["fields"] = dict(self.rest)
        return out


def final_failure(exc: BaseException, ctx: Context) -> str | None:
    """Why a prompt failed for good (no delivery follows: a Reject, or the last attempt), else None."""
    if isinstance(exc, Reject):
        return exc.reason
    if isinstance(exc, HandlerSignal):  # Retry, Abandon: another delivery comes
        return None
    max_deliver = ctx.mesh.config.max_deliver if ctx.mesh is not None else 1
    if ctx.delivery is None or ctx.delivery.deliveries >= max_deliver:
        return f"{type(exc).__name__}: {exc}"
    return None


def _outcome(env: Envelope) -> tuple[str, str | None]:
    """A RESULT's text and error (None when it succeeded)."""
    error, content = env.payload.metadata.get("error"), env.content
    text = content if isinstance(content, str) else "" if content is None else str(content)
    return text, (str(error) if error else None)


class ResultWatch:
    """The RESULT of one prompt as it is published (a plain subscription, opened before the prompt is
    sent): how the front door learns of an end its executor never saw, e.g. the node's command policy
    refusing ``prompt`` before any handler runs."""

    def __init__(self) -> None:
        self.outcome: asyncio.Future[tuple[str, str | None]] = asyncio.get_running_loop().create_future()
        self._sub: Any = None

    @classmethod
    async def open(cls, mesh: Mesh, correlation_id: str) -> ResultWatch:
        watch = cls()
        watch._sub = await mesh.subscribe(subjects.result(correlation_id), watch._on_result)
        return watch

    async def _on_result(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        try:
            env = decode(data)
        except EnvelopeError:
            return
        if not self.outcome.done():
            self.outcome.set_result(_outcome(env))

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        if not self.outcome.done():
            self.outcome.cancel()


async def replay_text(mesh: Mesh, correlation_id: str) -> tuple[str, str | None]:
    """The stored RESULT of an earlier prompt (waiting for it if it is still running): its text and
    its error (None when it succeeded)."""
    records = mesh.tail("result", filters=[subjects.result(correlation_id)], follow=True)
    try:
        async for rec in records:
            if rec.envelope is not None:
                return _outcome(rec.envelope)
    finally:
        await records.aclose()  # type: ignore[attr-defined]  # an async generator
    return "", "the RESULT stream ended"
