"""What goes inside the envelope for the types the mesh acts on (public contract).

CHAT and SYNC carry free-form content. For HEARTBEAT, STATUS, ALERT, COMMAND, RESULT and TASK the
mesh reads fields of ``payload``, so their shape is part of the contract: these structs are its one
source, ``schemas/<type>.schema.json`` (JSON Schema, shipped in the package) are generated from them,
and ``decode()`` checks every envelope of those types against them with ``msgspec.convert``, so a bad
one is an ``EnvelopeError`` naming the field (``payload.content.epoch``) and a consumer dead-letters
it with that reason. Unknown fields are tolerated everywhere; null in an optional field is absent.

A node written in another language is tracked by the Doctor when it sends, every interval,

    nxs.heartbeat.<its id>  {"content": {"epoch": "<boot id>", "seq": <1, 2, 3, ...>, "state": "running"}}

and a clean stop is a STATUS (or heartbeat) with ``"state": "stopped"``. It answers a COMMAND
``{"command": name, "args": ...}`` that has a ``reply_to`` with a RESULT published there, carrying the
request's ``correlation_id`` and ``payload.metadata.ok`` (plus ``error`` on failure).

>>> from nxs_mesh.wire.envelope import Source, new_envelope
>>> hb = new_envelope("HEARTBEAT", {"epoch": "3f2a9c1b7d4e", "seq": 7}, source=Source("n1", "main"))
>>> validate_content(hb).content.seq
7
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta, Struct, field

from nxs_mesh.wire._lenient import drop_null_optionals, is_null_error, split_error
from nxs_mesh.wire.contract import ID_PATTERN, python_pattern
from nxs_mesh.wire.errors import EnvelopeError

__all__ = [
    "PAYLOAD_OF_TYPE",
    "Alert",
    "AlertMetadata",
    "AlertPayload",
    "Command",
    "CommandPayload",
    "Heartbeat",
    "HeartbeatPayload",
    "ResultMetadata",
    "ResultPayload",
    "Status",
    "StatusPayload",
    "TaskMetadata",
    "TaskPayload",
    "check_payload",
    "validate_content",
]

Epoch = Annotated[str, Meta(min_length=1, max_length=64, description=(
    "This incarnation of the node: a fresh random token (e.g. 12 hex digits) at every start, the same "
    "in all its heartbeats and statuses until it stops."))]
Seq = Annotated[int, Meta(ge=0, description=(
    "Heartbeat counter within the epoch: 1, 2, 3, ... (a doctor ignores a lower or equal one: reordered, or a duplicate)."))]
State = Annotated[str, Meta(min_length=1, max_length=32, description=(
    "The node's own state: new, starting, running, draining, stopped (known values). 'stopped' is a "
    "clean exit: its silence afterwards is no death. Any other value counts as alive."))]
NodeId = Annotated[str, Meta(pattern=python_pattern(ID_PATTERN), description="An instance id.")]
Count = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0)]


class Heartbeat(Struct, frozen=True, omit_defaults=True):
    """HEARTBEAT content. Sent every interval (default 1 s) on nxs.heartbeat.<from_instance> (a plain
    publish is enough: the stream keeps the last one per node). Doctors time them with their own
    clock; a node silent for dead_after (default 5 s) is declared dead with one ALERT."""

    epoch: Epoch
    seq: Seq
    state: State = "running"
    inflight: Count = 0
    claims: Annotated[dict[str, str], Meta(description=(
        "TASKs this node works on now: task message_id -> the $JS.ACK subject of its delivery, so a "
        "doctor can hand them to live workers (publish -NAK there) when the node dies."))] = {}


class Status(Struct, frozen=True):
    """STATUS content: the node's description, on nxs.status.<from_instance> (the stream keeps the
    last one per node), sent at start, on every state change and every status interval."""

    state: State
    epoch: Epoch
    version: str = ""
    started_at: Annotated[str, Meta(description="RFC 3339 time of the start.")] = ""
    uptime: Seconds = 0.0
    load: float = 0.0
    inflight: Count = 0
    queue_depth: Count = 0
    agents: list[str] = []
    location: str = ""
    server: str | None = None
    path: Annotated[str, Meta(description="local, peer, relay or disconnected")] = ""
    outbox: Count = 0
    host: str = ""
    pid: int = 0
    capabilities: list[str] = []
    commands: list[str] = []
    heartbeat_interval: Seconds | None = None
    dead_after: Seconds | None = None


class Alert(Struct, frozen=True):
    """ALERT content, on nxs.alert.<about_instance>. Its message_id is derived (see
    x-nxs-message-id), so the many doctors that see one death store one alert."""

    event: Annotated[str, Meta(min_length=1, max_length=32, description=(
        "dead or recovered (known values)"))]
    node: NodeId
    epoch: Epoch
    seq: Annotated[int, Meta(ge=0, description="seq of the node's last heartbeat before the event")]
    location: str = ""
    detected_by: str = ""
    silent_for: Seconds | None = None
    claims: Count | None = None
    released: Count | None = None
    new_epoch: str | None = None
    restarted: bool | None = None


class AlertMetadata(Struct, frozen=True):
    node: NodeId | None = None
    event: str | None = None
    severity: Annotated[str, Meta(description="critical (dead) or info (recovered)")] = ""


class Command(Struct, frozen=True):
    """COMMAND content, on nxs.command.<to_instance>.<to_agent>.p<priority>. With reply_to set,
    the node answers with one RESULT published there (see result.schema.json)."""

    command: Annotated[str, Meta(min_length=1, max_length=128, description="the handler's name")]
    args: Any = None


class ResultMetadata(Struct, frozen=True):
    ok: Annotated[bool, Meta(description="false when the request failed")] = True
    error: Annotated[str | None, Meta(description=(
        "why it failed; a caller raises an error for a RESULT with a non-empty error"))] = None
    command: str | None = None
    task_id: str | None = None
    node: str | None = None
    capability: str | None = None


class TaskMetadata(Struct, frozen=True):
    capability: Annotated[str, Meta(pattern=python_pattern(ID_PATTERN), description="which workers may take it")]


class HeartbeatPayload(Struct, frozen=True):
    """payload of a HEARTBEAT envelope."""

    content: Heartbeat
    metadata: dict[str, Any] = {}


class StatusPayload(Struct, frozen=True):
    """payload of a STATUS envelope."""

    content: Status
    metadata: dict[str, Any] = {}


class AlertPayload(Struct, frozen=True):
    """payload of an ALERT envelope."""

    content: Alert
    metadata: AlertMetadata = field(default_factory=AlertMetadata)


class CommandPayload(Struct, frozen=True):
    """payload of a COMMAND envelope."""

    content: Command
    metadata: dict[str, Any] = {}


class ResultPayload(Struct, frozen=True):
    """payload of a RESULT envelope, published on the request's reply_to (else
    nxs.result.<correlation_id>) with the request's correlation_id (required). content is what the
    handler returned (any JSON value)."""

    content: Any = None
    metadata: ResultMetadata = field(default_factory=ResultMetadata)


class TaskPayload(Struct, frozen=True):
    """payload of a TASK envelope, on nxs.task.<capability>.p<priority>; content is free-form."""

    metadata: TaskMetadata
    content: Any = ""


#: The payload struct of each message type whose content the mesh reads (CHAT and SYNC: free-form).
PAYLOAD_OF_TYPE: Final[dict[str, type[Struct]]] = {
    "HEARTBEAT": HeartbeatPayload,
    "STATUS": StatusPayload,
    "ALERT": AlertPayload,
    "COMMAND": CommandPayload,
    "RESULT": ResultPayload,
    "TASK": TaskPayload,
}


def _typed_parts(payload: type[Struct]) -> tuple[Any, Any]:
    """The types of a payload struct's ``content`` and ``metadata`` (None where free-form): decode
    converts just those (checking a dict is cheaper than building a payload around it)."""
    types = {f.name: f.type for f in msgspec.structs.fields(payload)}
    content, metadata = (None if types[name] in (Any, dict[str, Any]) else types[name] for name in ("content", "metadata"))
    return content, metadata


_PARTS: Final = {kind: _typed_parts(tp) for kind, tp in PAYLOAD_OF_TYPE.items()}
_convert: Final = msgspec.convert


def check_payload(kind: str, correlation_id: object, content: Any, metadata: dict[str, Any]) -> Any:
    """Check one envelope's payload against its type's struct (its typed parts only). Returns None,
    or ``(content, metadata)`` without the nulls that meant "absent", to put back in the envelope.
    Raises ``EnvelopeError`` naming the field."""
    parts = _PARTS.get(kind)
    if parts is None:
        return None
    if kind == "RESULT" and not isinstance(correlation_id, str):
        raise EnvelopeError("a RESULT needs the correlation_id of its request", "correlation_id")
    content_type, metadata_type = parts
    try:
        if content_type is not None:
            _convert(content, content_type)
        if metadata_type is not None:
            _convert(metadata, metadata_type)
        return None
    except msgspec.ValidationError:
        pass
    # The slow path: find which part failed, forgive nulls that mean "absent", name the field.
    values = {"content": content, "metadata": metadata}
    for name, tp in (("content", content_type), ("metadata", metadata_type)):
        if tp is None:
            continue
        try:
            _convert(values[name], tp)
            continue
        except msgspec.ValidationError as exc:
            if not is_null_error(exc):
                raise _named(kind, name, exc) from None
        values[name] = drop_null_optionals(values[name], tp)
        try:
            _convert(values[name], tp)
        except msgspec.ValidationError as exc:
            raise _named(kind, name, exc) from None
    return values["content"], values["metadata"]


def _named(kind: str, part: str, exc: msgspec.ValidationError) -> EnvelopeError:
    path, message = split_error(str(exc))
    name = kind.lower()
    return EnvelopeError(f"not a {name}: {message} (see schemas/{name}.schema.json)",
                         f"payload.{part}.{path}" if path else f"payload.{part}")


def validate_content(env: Any) -> Any:
    """The typed payload of ``env`` (e.g. ``HeartbeatPayload``: ``.content.epoch``), checked against
    its type's schema; ``env.payload`` itself for free-form types (CHAT, SYNC). Raises
    ``EnvelopeError`` naming the field. ``decode()`` already runs this check on every envelope."""
    tp = PAYLOAD_OF_TYPE.get(env.message_type)
    p = env.payload
    cleaned = check_payload(env.message_type, env.correlation_id, p.content, p.metadata)
    if tp is None:
        return p
    content, metadata = cleaned or (p.content, p.metadata)
    return msgspec.convert({"content": content, "metadata": metadata}, tp)
