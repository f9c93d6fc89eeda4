"""The wire envelope (public contract, DESIGN.md section 3): structs, codec and validation.

Validation happens in msgspec's C decoder wherever it can (id lengths, priority range, UUID, RFC 3339
time), the id patterns (also ``correlation_id``, ``reply_to``) against compiled regexes and a cache,
so decoding is both strict and fast; errors are re-raised as ``EnvelopeError`` naming the field. ``decode()`` also checks the content of
the types the mesh reads (``wire.content``) and takes null in an optional field as absent.

Time on the wire: any RFC 3339 time is accepted (``2026-12-03T10:00:00.123Z`` from JavaScript,
``+02:00`` offsets, no fraction, nanoseconds); what the mesh writes is one style, UTC with ``Z`` and
a microsecond fraction unless it is zero (``format_time``), in JSON and MessagePack alike.

>>> env = new_envelope("CHAT", "hello", source=Source("nxs-node-001", "main"), to="nxs-node-002")
>>> decode(encode(env)) == env
True
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from nxs_mesh.wire._encode_errors import ENCODE_ERRORS, encode_error
from nxs_mesh.wire._lenient import drop_null_optionals, is_null_error, split_error
from nxs_mesh.wire.content import PAYLOAD_OF_TYPE, check_payload
from nxs_mesh.wire.contract import DEFAULT_PRIORITY, DEFAULT_TTL, ID_PATTERN, REPLY_TO_PATTERN
from nxs_mesh.wire.errors import EnvelopeError, UnknownMessageType
from nxs_mesh.wire.ids import random_uuid

__all__ = [
    "BROADCAST",
    "ENVELOPE_VERSION",
    "MAX_ENVELOPE_BYTES",
    "MESSAGE_TYPES",
    "Envelope",
    "MessageType",
    "Payload",
    "Source",
    "Target",
    "check_id",
    "decode",
    "decode_json",
    "encode",
    "format_time",
    "new_envelope",
    "normalize_type",
]

ENVELOPE_VERSION: Final = 1
#: Bigger envelopes are rejected before decoding (the server's default max_payload is 1 MiB).
MAX_ENVELOPE_BYTES: Final = 1024 * 1024
#: Target instance/agent meaning "everyone".
BROADCAST: Final = "*"

MessageType = Literal["CHAT", "COMMAND", "STATUS", "HEARTBEAT", "SYNC", "TASK", "RESULT", "ALERT"]
MESSAGE_TYPES: Final[tuple[str, ...]] = get_args(MessageType)
_TYPE_SET: Final = frozenset(MESSAGE_TYPES)
_TYPED: Final = frozenset(PAYLOAD_OF_TYPE)  # types whose payload decode() checks

_ID = ID_PATTERN
_ID_OR_ALL = r"^(\*|[A-Za-z0-9_:-]{1,64})$"
# Always fullmatch: Python's `$` also matches before a final newline ("node\n"), which in a subject
# token would break the NATS protocol line.
_ID_RE = re.compile(_ID)
_ID_OR_ALL_RE = re.compile(_ID_OR_ALL)
_REPLY_TO_RE = re.compile(REPLY_TO_PATTERN)

# The decoder checks only the length; the character set is checked by decode() against a cache of ids
# already seen valid (same regexes, same error text): msgspec's per-field pattern call was ~2/3 of decode.
# The pattern is still in the JSON Schema (extra_json_schema), which is what other languages read.
Id = Annotated[str, Meta(min_length=1, max_length=64, extra_json_schema={"pattern": _ID})]
IdOrAll = Annotated[str, Meta(min_length=1, max_length=64, extra_json_schema={"pattern": _ID_OR_ALL})]
# Checked by decode() with compiled regexes, for the same reason (msgspec's pattern check costs ~0.3 us).
CorrelationId = Annotated[str, Meta(min_length=1, max_length=64, extra_json_schema={"pattern": _ID})]
ReplyTo = Annotated[str, Meta(min_length=1, max_length=75, extra_json_schema={"pattern": REPLY_TO_PATTERN})]
Priority = Annotated[int, Meta(ge=0, le=9)]
Ttl = Annotated[int, Meta(ge=0)]
Timestamp = Annotated[datetime, Meta(tz=True)]
# Reserved in subjects for broadcast; a node may not be called that.
_RESERVED_IDS = frozenset({"_all"})


# Source and Target hold only strings and a bool, so they can be in no reference cycle: untracked by the
# GC (gc=False). Payload and Envelope stay tracked: content is any JSON value a caller may build.
class Source(Struct, frozen=True, gc=False):
    """Who sent it: instance (node) and agent ids; location is free text (e.g. a region)."""

    instance_id: Id
    agent_id: Id
    location: Annotated[str, Meta(max_length=128)] = ""


class Target(Struct, frozen=True, gc=False):
    """Whom it is for: instance "*" (with broadcast true) is every node, agent "*" every agent of it."""

    instance_id: IdOrAll = BROADCAST
    agent_id: IdOrAll = BROADCAST
    broadcast: bool = False

    @property
    def is_broadcast(self) -> bool:
        return self.broadcast or self.instance_id == BROADCAST


class Payload(Struct, frozen=True):
    """content: a str or any JSON value (its shape per type: the other schema files); metadata: str -> JSON."""

    content: Any = ""
    metadata: dict[str, Any] = {}


class Envelope(Struct, frozen=True):
    """message_id: any RFC 4122 UUID, unique per logical message, also sent as Nats-Msg-Id (random v4,
    or v5 where derived: see x-nxs-message-id in alert and result). timestamp: RFC 3339, any offset
    accepted; the mesh writes UTC with Z. priority: 0..9, higher first. ttl: seconds, 0 = never
    expires. correlation_id: ties a RESULT to its request. reply_to: where the request's RESULT goes
    (only nxs.result.<token>). v: envelope version."""

    message_id: uuid.UUID
    timestamp: Timestamp
    source: Source
    target: Target
    message_type: MessageType
    payload: Payload
    priority: Priority = DEFAULT_PRIORITY
    ttl: Ttl = DEFAULT_TTL
    correlation_id: CorrelationId | UnsetType = UNSET
    reply_to: ReplyTo | UnsetType = UNSET
    v: int = ENVELOPE_VERSION

    @property
    def id(self) -> str:
        return str(self.message_id)

    @property
    def content(self) -> Any:
        return self.payload.content

    def expires_at(self, stored_at: datetime | None = None) -> datetime | None:
        """When this message expires, counted from ``stored_at`` (server time) if given."""
        if self.ttl == 0:
            return None
        return (stored_at or self.timestamp) + timedelta(seconds=self.ttl)

    def is_expired(self, now: datetime | None = None, stored_at: datetime | None = None) -> bool:
        expires = self.expires_at(stored_at)
        return expires is not None and (now or datetime.now(UTC)) >= expires


_json_encoder = msgspec.json.Encoder()
#: msgspec's encoder itself: the wire bytes of an envelope whose timestamp is UTC (a batch's fast path;
#: ``encode`` is the checked entry, and names the field when this raises).
json_encode: Final = _json_encoder.encode
_json_decoder = msgspec.json.Decoder(Envelope)
_decode_json = _json_decoder.decode
_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder(Envelope)


def format_time(dt: datetime) -> str:
    """A time exactly as the encoder writes an envelope's ``timestamp``: RFC 3339 in UTC with ``Z``,
    a microsecond fraction unless it is zero (``2026-12-03T10:00:00.123000Z``). Use it for every
    time the mesh writes (headers, content), so the wire has one style."""
    return _json_encoder.encode(dt if dt.tzinfo is UTC else _utc(dt))[1:-1].decode()


def encode(env: Envelope, *, msgpack: bool = False) -> bytes:
    """Wire bytes of ``env``; raises ``EnvelopeError`` naming the field that cannot be encoded (e.g.
    ``payload.content`` holding a str with lone surrogates, which UTF-8 cannot carry)."""
    try:
        if not msgpack and env.timestamp.tzinfo is UTC:  # the usual case: msgspec's encoder at once
            return json_encode(env)
        if env.timestamp.tzinfo is not UTC:
            env = msgspec.structs.replace(env, timestamp=_utc(env.timestamp))
        if msgpack:
            # The contract's timestamp is a string in both encodings (msgspec would write a msgpack
            # timestamp extension, which other languages' decoders turn into their own date type).
            return _msgpack_encoder.encode(msgspec.structs.replace(env, timestamp=format_time(env.timestamp)))
        return json_encode(env)
    except ENCODE_ERRORS as exc:
        raise encode_error(env, exc) from None


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise EnvelopeError("a naive datetime has no zone; use an aware one (datetime.now(UTC))", "timestamp")
    return ts.astimezone(UTC)


def decode(data: bytes | bytearray | memoryview, *, msgpack: bool = False, strict_content: bool = True) -> Envelope:
    """Decode and validate wire bytes; raises ``EnvelopeError`` naming the bad field.

    With ``strict_content`` (the default, and what consumers rely on) the payload of HEARTBEAT,
    STATUS, ALERT, COMMAND, RESULT and TASK is checked against ``wire.content`` too."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise _too_big(data)
    try:
        env = (_msgpack_decoder if msgpack else _json_decoder).decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        env = _decode_failed(data, msgpack, exc)
    return _checked(env, strict_content)


def decode_json(data: bytes | bytearray | memoryview) -> Envelope:
    """``decode(data)`` of JSON with the content checked, the consumers' hot path: the same validation
    and errors in the fewest Python steps (ids already seen valid cost a set lookup each)."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise _too_big(data)
    try:
        env = _decode_json(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        env = _decode_failed(data, False, exc)
    return _checked(env, True)


def _too_big(data: bytes | bytearray | memoryview) -> EnvelopeError:
    return EnvelopeError(f"envelope is {len(data)} bytes; the limit is {MAX_ENVELOPE_BYTES}")


def _decode_failed(data: bytes | bytearray | memoryview, msgpack: bool, exc: Exception) -> Envelope:
    """The slow path of a decode that msgspec refused: nulls in optional fields are forgiven (see
    ``wire._lenient``), anything else becomes the ``EnvelopeError`` naming the field."""
    if isinstance(exc, msgspec.ValidationError):
        if not is_null_error(exc):
            raise _validation_error(str(exc)) from None
        return _decode_with_nulls(data, msgpack)
    if isinstance(exc, msgspec.DecodeError):
        raise EnvelopeError(f"not valid {'MessagePack' if msgpack else 'JSON'}: {exc}") from None
    raise EnvelopeError("nested too deeply to decode") from None


def _checked(env: Envelope, strict_content: bool) -> Envelope:
    """The checks msgspec's decoder does not make: id characters (a cache of ids seen valid; never
    '_all', so a source of that name always reaches ``_check_ids``), reply fields, typed content."""
    src, tgt, known = env.source, env.target, _VALID_IDS
    if not (src.instance_id in known and src.agent_id in known
            and (tgt.instance_id in known or tgt.instance_id == BROADCAST)
            and (tgt.agent_id in known or tgt.agent_id == BROADCAST)):
        _check_ids(env)
    if env.correlation_id is not UNSET or env.reply_to is not UNSET:
        _check_reply(env)
    if strict_content and env.message_type in _TYPED:
        p = env.payload
        cleaned = check_payload(env.message_type, env.correlation_id, p.content, p.metadata)
        if cleaned is not None:
            env = msgspec.structs.replace(env, payload=Payload(*cleaned))
    return env


def _check_reply(env: Envelope) -> None:
    """Both may become subject tokens of a RESULT (``contract.result_subject``): a bad one is refused
    here, before any handler runs, rather than after it, when the answer cannot be sent."""
    corr, reply = env.correlation_id, env.reply_to
    if corr is not UNSET and not _ID_RE.fullmatch(corr):
        raise EnvelopeError(f"Expected `str` matching regex {_ID!r}", "correlation_id")
    if reply is not UNSET and not _REPLY_TO_RE.fullmatch(reply):
        raise EnvelopeError(f"Expected `str` matching regex {REPLY_TO_PATTERN!r} (a result subject)", "reply_to")


def _decode_with_nulls(data: bytes | bytearray | memoryview, msgpack: bool) -> Envelope:
    """The slow path of decode: null in an optional field means absent (see ``wire._lenient``)."""
    raw = (msgspec.msgpack if msgpack else msgspec.json).decode(data)
    try:
        return msgspec.convert(drop_null_optionals(raw, Envelope), Envelope)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from None


# Ids that matched _ID (never "*", never the reserved "_all"); bounded, since ids come from the network.
_VALID_IDS: set[str] = set()


def _check_ids(env: Envelope) -> None:
    for value, field, pattern in (
        (env.source.instance_id, "source.instance_id", _ID_RE),
        (env.source.agent_id, "source.agent_id", _ID_RE),
        (env.target.instance_id, "target.instance_id", _ID_OR_ALL_RE),
        (env.target.agent_id, "target.agent_id", _ID_OR_ALL_RE),
    ):
        if value in _VALID_IDS or (value == BROADCAST and pattern is _ID_OR_ALL_RE):
            continue
        if not pattern.fullmatch(value):
            raise EnvelopeError(f"Expected `str` matching regex {pattern.pattern!r}", field)
        if value in _RESERVED_IDS:
            if field == "source.instance_id":
                raise EnvelopeError("'_all' is reserved for broadcast", field)
            continue  # a target may name it; never cached, so a source of that name is always refused
        if len(_VALID_IDS) >= 10_000:
            _VALID_IDS.clear()
        _VALID_IDS.add(value)


def _validation_error(text: str) -> EnvelopeError:
    field, message = split_error(text)
    if field == "message_type":
        shown = message.replace("Invalid enum value", "unknown message type")
        return UnknownMessageType(f"{shown}; known types are {', '.join(MESSAGE_TYPES)}", "message_type")
    return EnvelopeError(message, field or None)


# Ids that passed check_id (match _ID, not reserved): the same few ids are checked on every publish.
_CHECKED_IDS: set[str] = set()


def check_id(value: object, field: str, *, allow_all: bool = False) -> str:
    """Reject an instance or agent id at the edge, naming the field (never escape it)."""
    if type(value) is str and (value in _CHECKED_IDS or (allow_all and value == BROADCAST)):
        return value
    pattern = _ID_OR_ALL_RE if allow_all else _ID_RE
    if not isinstance(value, str) or not pattern.fullmatch(value):
        allowed = "'*' or " if allow_all else ""
        raise EnvelopeError(
            f"{value!r} is not a valid id: use {allowed}1-64 characters from A-Z a-z 0-9 _ : -", field
        )
    if value in _RESERVED_IDS:
        raise EnvelopeError(f"{value!r} is reserved for broadcast", field)
    if type(value) is str and value != BROADCAST:
        if len(_CHECKED_IDS) >= 10_000:  # bounded: ids may come from the network
            _CHECKED_IDS.clear()
        _CHECKED_IDS.add(value)
    return value


def normalize_type(value: str) -> MessageType:
    upper = value.upper() if isinstance(value, str) else value
    if upper not in MESSAGE_TYPES:
        raise UnknownMessageType(
            f"unknown message type {value!r}; known types are {', '.join(MESSAGE_TYPES)}", "message_type"
        )
    return upper  # type: ignore[return-value]


def new_envelope(
    message_type: str,
    content: Any = "",
    *,
    source: Source,
    to: str = BROADCAST,
    agent: str = BROADCAST,
    priority: int = DEFAULT_PRIORITY,
    ttl: int = DEFAULT_TTL,
    metadata: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    message_id: uuid.UUID | str | None = None,
) -> Envelope:
    """Build a validated outgoing envelope. Struct constructors do not check constraints, this does."""
    kind = message_type if message_type in _TYPE_SET else normalize_type(message_type)
    known = _CHECKED_IDS  # the same few ids on every publish: a set lookup each, check_id for the rest
    if type(to) is not str or not (to in known or to == BROADCAST):
        to = check_id(to, "target.instance_id", allow_all=True)
    if type(agent) is not str or not (agent in known or agent == BROADCAST):
        agent = check_id(agent, "target.agent_id", allow_all=True)
    src_instance, src_agent = source.instance_id, source.agent_id
    if type(src_instance) is not str or type(src_agent) is not str or src_instance not in known or src_agent not in known:
        check_id(src_instance, "source.instance_id")
        check_id(src_agent, "source.agent_id")
    if type(priority) is not int or not 0 <= priority <= 9:
        raise EnvelopeError(f"{priority!r} is out of range: use an integer 0..9", "priority")
    if type(ttl) is not int or ttl < 0:
        raise EnvelopeError(f"{ttl!r} is invalid: use whole seconds >= 0 (0 = never expires)", "ttl")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(k, str) for k in metadata)):
        raise EnvelopeError("must be a mapping of str to JSON values", "payload.metadata")
    if message_id is None:
        mid = random_uuid()
    else:
        try:
            mid = message_id if isinstance(message_id, uuid.UUID) else uuid.UUID(str(message_id))
        except ValueError:
            raise EnvelopeError(f"{message_id!r} is not a UUID", "message_id") from None
    if correlation_id is not None and not (isinstance(correlation_id, str) and _ID_RE.fullmatch(correlation_id)):
        raise EnvelopeError(f"{correlation_id!r} is not a valid id", "correlation_id")
    if reply_to is not None and not (isinstance(reply_to, str) and _REPLY_TO_RE.fullmatch(reply_to)):
        raise EnvelopeError(f"{reply_to!r} is not a result subject: use nxs.result.<token> "
                            "(token: 1-64 characters from A-Z a-z 0-9 _ : -)", "reply_to")
    # Positional: msgspec builds a struct from positional arguments ~40% faster than from keywords.
    return Envelope(
        mid, datetime.now(UTC), source, Target(to, agent, to == BROADCAST),
        kind,  # type: ignore[arg-type]  # checked against MESSAGE_TYPES above
        Payload(content, metadata or {}), priority, ttl,
        UNSET if correlation_id is None else correlation_id, UNSET if reply_to is None else reply_to,
    )
