"""Null in an optional field means absent (public contract), without slowing the common case.

Many serialisers write ``null`` for an unset field by default (Jackson, Go pointers, Python
``dataclasses.asdict``). The structs stay strict, so the Python types stay simple (``priority`` is an
``int``, ``metadata`` a ``dict``) and the C decoder runs at full speed; only when it reports a
``null`` does the slow path drop the nulls that sit in optional fields (guided by msgspec's own type
information) and validate again. A null in a required field, or in a field whose type takes null
(``payload.content``), is left alone, so it is still a value or still an error naming the field.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final

import msgspec
from msgspec import inspect as mi

__all__ = ["convert_lenient", "drop_null_optionals", "is_null_error", "split_error"]

_PATH_RE: Final = re.compile(r"at `\$\.?([^`]*)`")
_MISSING_RE: Final = re.compile(r"missing required field `([^`]+)`")


def split_error(text: str) -> tuple[str | None, str]:
    """msgspec's "Expected `int`, got `str` - at `$.payload.content.seq`" -> ("payload.content.seq", "Expected ...").
    A missing field is named itself, not its parent object."""
    match = _PATH_RE.search(text)
    path = (match.group(1) or None) if match else None
    message = _PATH_RE.sub("", text).rstrip(" -")
    if (missing := _MISSING_RE.search(message)) is not None:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path, message


def is_null_error(exc: msgspec.ValidationError) -> bool:
    text = str(exc)
    return "got `null`" in text or "got `None`" in text  # JSON null, MessagePack nil


@functools.cache
def _info(tp: Any) -> mi.Type:
    return mi.type_info(tp)


def _accepts_null(t: mi.Type) -> bool:
    if isinstance(t, mi.Metadata):
        return _accepts_null(t.type)
    if isinstance(t, mi.UnionType):
        return any(_accepts_null(m) for m in t.types)
    return isinstance(t, mi.AnyType | mi.NoneType)


def _walk(obj: Any, t: mi.Type) -> Any:
    if isinstance(t, mi.Metadata):
        return _walk(obj, t.type)
    if isinstance(t, mi.UnionType):
        for member in t.types:
            if isinstance(member, mi.StructType | mi.DictType) and isinstance(obj, dict):
                return _walk(obj, member)
        return obj
    if isinstance(t, mi.StructType) and isinstance(obj, dict):
        fields = {f.encode_name: f for f in t.fields}
        out = {}
        for key, value in obj.items():
            f = fields.get(key)
            if f is None:
                out[key] = value  # unknown fields are tolerated, untouched
            elif value is None and not f.required and not _accepts_null(f.type):
                continue  # null = absent: the default applies
            else:
                out[key] = _walk(value, f.type)
        return out
    if isinstance(t, mi.DictType) and isinstance(obj, dict):
        return {k: _walk(v, t.value_type) for k, v in obj.items()}
    if isinstance(t, mi.ListType | mi.VarTupleType) and isinstance(obj, list):
        return [_walk(v, t.item_type) for v in obj]
    return obj


def drop_null_optionals(obj: Any, tp: Any) -> Any:
    """A copy of ``obj`` (builtins) without the nulls that sit in optional fields of ``tp``; never mutates."""
    return _walk(obj, _info(tp))


def convert_lenient(obj: Any, tp: Any) -> Any:
    """``msgspec.convert(obj, tp)`` where null in an optional field means absent."""
    try:
        return msgspec.convert(obj, tp)
    except msgspec.ValidationError as exc:
        if not is_null_error(exc):
            raise
    return msgspec.convert(drop_null_optionals(obj, tp), tp)
