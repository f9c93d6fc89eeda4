"""The facts of the wire contract that are not the envelope's shape: defaults, header names, id and
subject patterns, which stream stores each message type, and where a RESULT goes. One home for each;
everything imports them.
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_TTL",
    "DLQ_MSG_ID",
    "DLQ_STREAM",
    "ENCODING_HEADER",
    "ID_PATTERN",
    "MSGPACK",
    "MSG_ID_HEADER",
    "REPLAY_MSG_ID",
    "REPLY_TO_PATTERN",
    "REQUEST_PRIORITY",
    "RESULT_PREFIX",
    "STREAM_OF_TYPE",
    "SUBJECT_ROOT",
    "TASK_TTL",
    "TTL_HEADER",
    "TTL_TYPES",
    "python_pattern",
    "result_subject",
]

#: First token of every mesh subject (DESIGN.md section 4), and the start of every result subject.
SUBJECT_ROOT: Final = "nxs"
RESULT_PREFIX: Final = f"{SUBJECT_ROOT}.result."
#: Instance ids, agent ids, capabilities and correlation ids: each may become one subject token. The
#: patterns are written as JSON Schema (ECMA 262) reads them, matching the whole string: in Python use
#: ``re.fullmatch`` or ``python_pattern`` (Python's ``$`` also matches before a final newline).
ID_PATTERN: Final = r"^[A-Za-z0-9_:-]{1,64}$"
#: Where a request's RESULT may be sent: one result subject, never an arbitrary one (a COMMAND must
#: not make a node publish into another stream).
REPLY_TO_PATTERN: Final = r"^nxs\.result\.[A-Za-z0-9_:-]{1,64}$"


def python_pattern(pattern: str) -> str:
    """A contract pattern anchored for Python's ``re.search`` (as msgspec's ``Meta(pattern=)`` uses it)."""
    return pattern.removesuffix("$") + r"\Z"

#: Envelope defaults (DESIGN.md section 3): priority 0..9, higher is more urgent; ttl in seconds, 0 = never.
DEFAULT_PRIORITY: Final = 1
DEFAULT_TTL: Final = 300
#: A request (COMMAND awaiting a RESULT) jumps a backlog of ordinary work by default.
REQUEST_PRIORITY: Final = 5
#: A TASK may wait longer than a chat for a capable worker.
TASK_TTL: Final = 3600

#: Headers: the dedup key (= message_id), the server-side expiry, and the encoding of the body.
MSG_ID_HEADER: Final = "Nats-Msg-Id"
TTL_HEADER: Final = "Nats-TTL"
ENCODING_HEADER: Final = "Nxs-Encoding"
MSGPACK: Final = "msgpack"

#: Which JetStream stream stores each message type.
STREAM_OF_TYPE: Final = {
    "CHAT": "NXS_CHAT",
    "COMMAND": "NXS_COMMAND",
    "TASK": "NXS_TASK",
    "RESULT": "NXS_RESULT",
    "STATUS": "NXS_STATUS",
    "HEARTBEAT": "NXS_HEARTBEAT",
    "SYNC": "NXS_SYNC",
    "ALERT": "NXS_ALERT",
}
DLQ_STREAM: Final = "NXS_DLQ"

#: Types the mesh publishes with a ``Nats-TTL`` header (their streams drop expired messages themselves).
#: CHAT keeps its history for replay, so the mesh never sends the header there and consumers enforce the
#: ttl; NXS_CHAT still allows the header, so a foreign publisher that sets it is stored (and dropped by
#: the server at expiry) instead of refused.
TTL_TYPES: Final = frozenset({"COMMAND", "TASK", "HEARTBEAT", "SYNC"})

#: ``Nats-Msg-Id`` of the copies the mesh makes itself, which are not the original publish: a dead
#: letter is keyed by where it came from (one letter per stored message, however many consumers
#: give up on it; its bytes may not even hold a ``message_id``), and a replay by the letter it
#: replays (the original ``message_id`` is still inside the stream's duplicate window, where the
#: server would drop it). The envelope inside keeps its ``message_id``: receivers dedupe by that.
DLQ_MSG_ID: Final = "dlq:{stream}:{seq}"
REPLAY_MSG_ID: Final = "replay:{stream}:{seq}"


class _Request(Protocol):
    """What ``result_subject`` reads of an ``Envelope`` (a leaf: this module imports no other)."""

    @property
    def reply_to(self) -> object: ...
    @property
    def correlation_id(self) -> object: ...
    @property
    def id(self) -> str: ...


def result_subject(env: _Request) -> str:
    """Where the RESULT of request ``env`` (a COMMAND or TASK) goes: its ``reply_to`` when set (decode
    and ``new_envelope`` allow only ``nxs.result.<token>`` there), else ``nxs.result.<correlation_id>``,
    else ``nxs.result.<message_id>``.

    >>> from nxs_mesh.wire.envelope import Source, new_envelope
    >>> req = new_envelope("COMMAND", {"command": "ping"}, source=Source("a", "b"), correlation_id="c-1")
    >>> result_subject(req)
    'nxs.result.c-1'
    """
    if isinstance(env.reply_to, str):
        return env.reply_to
    return RESULT_PREFIX + (env.correlation_id if isinstance(env.correlation_id, str) else env.id)
