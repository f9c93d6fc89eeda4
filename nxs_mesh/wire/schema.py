"""JSON Schema files of the wire contract, generated from the structs (``msgspec.json.schema``).

The files in ``nxs_mesh/wire/schemas/`` are shipped in the package for programs in other languages;
a test checks that they equal what this module generates, so they never drift from the code. After
changing a struct, regenerate them:

    python -m nxs_mesh.wire.schema

Each file is a JSON Schema (draft 2020-12) of the envelope or of one type's ``payload``, plus a few
``x-nxs-*`` keys that schemas cannot express: the message type, its subject, and for derived ids the
UUID v5 rule (``wire.ids``). Optional properties accept null (meaning absent), as decoding does.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Final

import msgspec

from nxs_mesh.wire import ids
from nxs_mesh.wire.content import PAYLOAD_OF_TYPE
from nxs_mesh.wire.envelope import Envelope

__all__ = ["SCHEMA_NAMES", "schema_dir", "schema_of", "schema_text", "write_schemas"]

_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_SUBJECTS: Final = {
    "HEARTBEAT": "nxs.heartbeat.<from_instance>",
    "STATUS": "nxs.status.<from_instance>",
    "ALERT": "nxs.alert.<about_instance>",
    "COMMAND": "nxs.command.<to_instance>.<to_agent>.p<priority>",
    "RESULT": "the request's reply_to, else nxs.result.<correlation_id>",
    "TASK": "nxs.task.<capability>.p<priority>",
}

_DERIVED_IDS: Final = {
    "ALERT": {"uuid_version": 5, "namespace": str(ids.ALERT_NAMESPACE), "name": ids.ALERT_NAME,
              "fields": "event, node, epoch, seq of payload.content"},
    "RESULT": {"uuid_version": 5, "namespace": str(ids.RESULT_NAMESPACE), "name": ids.RESULT_NAME,
               "fields": "request_id = the message_id of the COMMAND or TASK answered (canonical lowercase)"},
}

#: File stem -> message type ("envelope": the envelope itself).
SCHEMA_NAMES: Final = ("envelope", *(kind.lower() for kind in PAYLOAD_OF_TYPE))


def _nullable(schema: dict[str, Any]) -> None:
    """Let every optional property of every object in ``$defs`` be null too (= absent)."""
    for definition in schema.get("$defs", {}).values():
        required = set(definition.get("required", ()))
        for name, prop in definition.get("properties", {}).items():
            if name in required or _takes_null(prop):
                continue
            keep = {k: prop.pop(k) for k in ("description", "default") if k in prop}
            definition["properties"][name] = {**keep, "anyOf": [*prop.get("anyOf", [prop]), {"type": "null"}]}


def _ecma_patterns(node: Any) -> None:
    """Python anchors patterns with ``\\Z`` (its ``$`` also matches before a final newline); JSON Schema
    patterns are ECMA 262, where ``$`` is the end (``contract.python_pattern`` in reverse)."""
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str) and node["pattern"].endswith("\\Z"):
            node["pattern"] = node["pattern"].removesuffix("\\Z") + "$"
        for value in node.values():
            _ecma_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _ecma_patterns(value)


def _takes_null(prop: dict[str, Any]) -> bool:
    if not set(prop) - {"description", "default", "title"}:
        return True  # no constraint: any JSON value, null included
    options = prop.get("anyOf", [prop])
    return any(o.get("type") == "null" for o in options)


def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema for ``name`` (one of ``SCHEMA_NAMES``), as shipped."""
    if name == "envelope":
        head: dict[str, Any] = {
            "title": "nxs-mesh envelope",
            "description": ("Every mesh message (DESIGN.md section 3). JSON (UTF-8) by default; with header "
                            "Nxs-Encoding: msgpack the same fields in MessagePack (timestamp still a string). "
                            "Unknown fields are tolerated; null in an optional field means absent."),
        }
        tp: Any = Envelope
    else:
        kind = name.upper()
        tp = PAYLOAD_OF_TYPE[kind]
        head = {"title": f"nxs-mesh {kind} payload", "description": (tp.__doc__ or "").strip(),
                "x-nxs-message-type": kind, "x-nxs-subject": _SUBJECTS[kind]}
        if kind in _DERIVED_IDS:
            head["x-nxs-message-id"] = _DERIVED_IDS[kind]
    schema = msgspec.json.schema(tp)
    _nullable(schema)
    _ecma_patterns(schema)
    return {"$schema": _DIALECT, **head, **schema}


def schema_text(name: str) -> str:
    return json.dumps(schema_of(name), indent=2, ensure_ascii=False) + "\n"


def schema_dir() -> Path:
    """Where the shipped schema files are (inside the installed package)."""
    return Path(str(resources.files("nxs_mesh.wire") / "schemas"))


def write_schemas(directory: Path | None = None) -> list[Path]:
    out = directory or schema_dir()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMA_NAMES:
        path = out / f"{name}.schema.json"
        path.write_text(schema_text(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_schemas():
        print(p)  # noqa: T201 - a developer's command
