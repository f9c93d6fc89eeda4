"""What a request carries, checked before the mesh sees it: bounded bodies, JSON, query parameters.

Each failure is an ``ApiError`` naming the field (400) or the size (413).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from starlette.requests import Request

from nxs_mesh.gateway.errors import ApiError

__all__ = ["ReplayStart", "bounded_stream", "int_param", "json_body", "json_bytes", "replay_start", "timeout_param",
           "validation_field"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# msgspec says where a value is wrong as "... - at `$.payload.priority`"; the field is that path.
_AT = re.compile(r" - at `\$\.?([^`]*)`$")
# ... and names a missing or unknown key in the message itself: "Object missing required field `type`".
_NAMED = re.compile(r"(?:missing required|unknown) field `([^`]*)`")


def _declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise ApiError(400, f"Content-Length {declared!r} is not a number", field="Content-Length")
    if int(declared) > limit:
        raise ApiError(413, f"body of {declared} bytes is over the limit of {limit} bytes", field="body")


async def bounded_stream(request: Request, limit: int | None) -> AsyncIterator[bytes]:
    """The request body piece by piece as it arrives; 413 as soon as it passes ``limit`` bytes."""
    if limit is not None:
        _declared_length(request, limit)
    seen = 0
    async for piece in request.stream():
        seen += len(piece)
        if limit is not None and seen > limit:
            raise ApiError(413, f"body is over the limit of {limit} bytes", field="body")
        if piece:
            yield piece


async def json_bytes(request: Request, limit: int, *, required: bool = True) -> tuple[bytes, Any]:
    """The body (at most ``limit`` bytes) and its JSON value; an empty body is None when not ``required``."""
    data = bytearray()
    async for piece in bounded_stream(request, limit):
        data += piece
    if not data.strip():
        if required:
            raise ApiError(400, "a JSON body is required", field="body")
        return b"", None
    try:
        return bytes(data), msgspec.json.decode(bytes(data))
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"not JSON: {exc}", field="body") from None


async def json_body(request: Request, limit: int, *, required: bool = True) -> Any:
    """The body parsed as JSON (``json_bytes`` without the bytes)."""
    return (await json_bytes(request, limit, required=required))[1]


def validation_field(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """(message without the location, the dotted field) of a msgspec validation error."""
    text = str(exc)
    found = _AT.search(text)
    message, path = (text, "") if found is None else (text[:found.start()], found.group(1))
    named = _NAMED.search(message)
    if named is not None:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return message, path or None


def int_param(request: Request, name: str, default: int | None, *, low: int = 0, high: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{raw!r} is not a whole number", field=name) from None
    if value < low or (high is not None and value > high):
        raise ApiError(400, f"{value} is out of range {low}..{high if high is not None else ''}", field=name)
    return value


def timeout_param(request: Request, default: float, high: float) -> float:
    raw = request.query_params.get("timeout")
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{raw!r} is not a number of seconds", field="timeout") from None
    if not 0 < value <= high:
        raise ApiError(400, f"{value} is out of range: more than 0, at most {high} seconds", field="timeout")
    return value


class ReplayStart(msgspec.Struct, frozen=True):
    """Where a replay begins: a stream sequence, a time, or the last N (all None: from the start)."""

    seq: int | None = None
    since: datetime | None = None
    last: int | None = None


def _parse_since(raw: str) -> ReplayStart:
    if raw.isdigit():
        return ReplayStart(seq=max(1, int(raw)))
    duration = _DURATION.fullmatch(raw)
    if duration:
        ago = float(duration.group(1)) * _UNIT[duration.group(2)]
        return ReplayStart(since=datetime.now(UTC) - timedelta(seconds=ago))
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{raw!r}: give a stream sequence (123), a duration (30s, 10m, 2h, 1d) "
                            "or an RFC 3339 time", field="since") from None
    return ReplayStart(since=when if when.tzinfo else when.replace(tzinfo=UTC))


def replay_start(request: Request, *, resume: bool = False) -> ReplayStart:
    """``since`` (sequence, duration or time) or ``last``; with ``resume``, a ``Last-Event-ID`` header (the
    last stream sequence the client saw) wins: the replay goes on right after it."""
    if resume:
        last_id = request.headers.get("last-event-id")
        if last_id:
            if not last_id.isdigit():
                raise ApiError(400, f"{last_id!r} is not a stream sequence", field="Last-Event-ID")
            return ReplayStart(seq=int(last_id) + 1)
    since = request.query_params.get("since")
    last = int_param(request, "last", None, low=1, high=100_000)
    if since and last is not None:
        raise ApiError(400, "give since or last, not both", field="last")
    if since:
        return _parse_since(since)
    return ReplayStart(last=last)
