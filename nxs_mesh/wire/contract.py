"""The facts of the wire contract that are not the envelope's shape: defaults, header names, which
stream stores each message type, and where a RESULT goes. One home for each; everything imports them.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_TTL",
    "DLQ_STREAM",
    "ENCODING_HEADER",
    "MSGPACK",
    "MSG_ID_HEADER",
    "REQUEST_PRIORITY",
    "STREAM_OF_TYPE",
    "TASK_TTL",
    "TTL_HEADER",
    "TTL_TYPES",
]

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
#: CHAT keeps its history for replay, so there the ttl is enforced by consumers only.
TTL_TYPES: Final = frozenset({"COMMAND", "TASK", "HEARTBEAT", "SYNC"})
