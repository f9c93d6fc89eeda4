"""Naming the envelope field that does not encode: the slow path of ``envelope.encode``, after a failure."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from nxs_mesh.wire.errors import EnvelopeError

__all__ = ["ENCODE_ERRORS", "encode_error"]

#: What msgspec's encoder raises for a value it cannot write (ValueError: UnicodeEncodeError).
ENCODE_ERRORS: Final = (TypeError, ValueError, OverflowError, msgspec.EncodeError)
_encoder = msgspec.json.Encoder()


def encode_error(env: Any, exc: Exception) -> EnvelopeError:
    """Name the part of ``env`` (an ``Envelope``: not imported, it imports this) that does not encode."""
    why = "not UTF-8 encodable" if isinstance(exc, UnicodeEncodeError) else "not JSON-encodable"
    parts: list[tuple[str, Any]] = [
        ("payload.content", env.payload.content), ("payload.metadata", env.payload.metadata),
        ("source.location", env.source.location), ("source", env.source), ("target", env.target),
        ("correlation_id", env.correlation_id), ("reply_to", env.reply_to),
    ]
    for path, value in parts:
        bad = _first_unencodable(value, path)
        if bad is not None:
            return EnvelopeError(f"{why}: {exc}", bad)
    return EnvelopeError(f"{why}: {exc}")


def _first_unencodable(value: Any, path: str) -> str | None:
    try:
        _encoder.encode(value)
        return None
    except ENCODE_ERRORS:
        pass
    if isinstance(value, dict):
        for key, item in value.items():
            if _first_unencodable(key, path) is not None:
                return path  # the key itself
            found = _first_unencodable(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _first_unencodable(item, f"{path}[{i}]")
            if found is not None:
                return found
    return path
