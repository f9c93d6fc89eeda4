"""`nxs pub`'s command line turned into envelope inputs: the content (argv or stdin), --meta, and the
flag to name when the envelope refuses a field.

argv and stdin carry bytes, not text: Python hands over undecodable argv bytes as lone surrogates
(surrogateescape), and stdin may hold anything. The wire contract is JSON in UTF-8, so such content is
refused here with the field it sits in, before anything is built or sent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import typer

from nxs_mesh.wire.errors import EnvelopeError

__all__ = ["content_value", "flag_for", "parse_meta", "read_content", "require_utf8"]

_FLAG_OF_FIELD = {
    "target.instance_id": "--to", "target.agent_id": "--agent", "priority": "--priority", "ttl": "--ttl",
    "message_id": "--id", "correlation_id": "--correlation-id", "capability": "--capability",
    "payload.metadata.capability": "--capability", "message_type": "TYPE", "payload.content": "CONTENT",
    "payload.metadata": "--meta",
}


def flag_for(field: str | None) -> str | None:
    """The option or argument that set ``field`` (a dotted path; ``payload.metadata.who`` -> --meta)."""
    path = field or ""
    while path:
        if path in _FLAG_OF_FIELD:
            return _FLAG_OF_FIELD[path]
        path = path.rpartition(".")[0]
    return None


def read_content(content: str | None) -> str:
    """CONTENT as text; '-' reads stdin as bytes and decodes them strictly (a bad byte is an error)."""
    if content != "-":
        return "" if content is None else content
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8").removesuffix("\n")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"stdin is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                            field="payload.content") from None


def content_value(content: str | None, *, as_json: bool) -> Any:
    """CONTENT (or stdin for '-') as the envelope's content: the text, or its JSON value; UTF-8 checked."""
    text = read_content(content)
    value: Any = text
    if as_json:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="CONTENT") from None
    require_utf8(value, "payload.content")
    return value


def require_utf8(value: Any, field: str) -> None:
    """Raise EnvelopeError naming the first string in ``value`` (nested too) that cannot be UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            # A lone surrogate U+DC80..U+DCFF is how Python carries an undecodable argv byte.
            what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
            raise EnvelopeError(f"not UTF-8 text ({what} at character {exc.start})", field=field) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            require_utf8(key, field)
            require_utf8(item, f"{field}.{key}")
    elif isinstance(value, list):
        for item in value:
            require_utf8(item, field)


def parse_meta(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: use key=value", param_hint="--meta")
        try:
            out[key.strip()] = json.loads(value)  # numbers, booleans, lists, objects
        except ValueError:
            out[key.strip()] = value
    return out
