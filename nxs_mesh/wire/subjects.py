"""Subject scheme (public contract, DESIGN.md section 4): build and parse.

    nxs.chat.<to_instance>.<to_agent>
    nxs.command.<to_instance>.<to_agent>.p<priority>
    nxs.task.<capability>.p<priority>
    nxs.result.<correlation_id>
    nxs.status.<from_instance>
    nxs.heartbeat.<from_instance>
    nxs.sync.<to_instance>.<to_agent>
    nxs.alert.<about_instance>
    nxs.dlq.<type>.<instance>

Broadcast: ``<to_instance>`` is ``_all``; agent ``*`` is ``_all`` in the subject.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from nxs_mesh.wire.contract import DEFAULT_PRIORITY, RESULT_PREFIX, SUBJECT_ROOT
from nxs_mesh.wire.envelope import BROADCAST, Envelope, check_id
from nxs_mesh.wire.errors import EnvelopeError

__all__ = [
    "ALL",
    "ROOT",
    "Subject",
    "alert",
    "chat",
    "command",
    "dlq",
    "filters_for",
    "for_envelope",
    "heartbeat",
    "parse",
    "result",
    "status",
    "sync",
    "task",
]

ROOT: Final = SUBJECT_ROOT
ALL: Final = "_all"


def _seg(value: str) -> str:
    return ALL if value == BROADCAST else value


def chat(to: str, agent: str = BROADCAST) -> str:
    return f"{ROOT}.chat.{_seg(to)}.{_seg(agent)}"


def command(to: str, agent: str = BROADCAST, priority: int = DEFAULT_PRIORITY) -> str:
    return f"{ROOT}.command.{_seg(to)}.{_seg(agent)}.p{priority}"


def task(capability: str, priority: int = DEFAULT_PRIORITY) -> str:
    check_id(capability, "capability")
    return f"{ROOT}.task.{capability}.p{priority}"


def result(correlation_id: str) -> str:
    return RESULT_PREFIX + correlation_id


def status(instance: str) -> str:
    return f"{ROOT}.status.{instance}"


def heartbeat(instance: str) -> str:
    return f"{ROOT}.heartbeat.{instance}"


def sync(to: str, agent: str = BROADCAST) -> str:
    return f"{ROOT}.sync.{_seg(to)}.{_seg(agent)}"


def alert(about: str) -> str:
    return f"{ROOT}.alert.{about}"


def dlq(kind: str, instance: str) -> str:
    return f"{ROOT}.dlq.{kind.lower()}.{instance}"


def for_envelope(env: Envelope, *, capability: str | None = None) -> str:
    """The subject an envelope is published on."""
    t, kind = env.target, env.message_type
    to = BROADCAST if t.broadcast else t.instance_id
    if kind == "CHAT":
        return chat(to, t.agent_id)
    if kind == "COMMAND":
        return command(to, t.agent_id, env.priority)
    if kind == "SYNC":
        return sync(to, t.agent_id)
    if kind == "STATUS":
        return status(env.source.instance_id)
    if kind == "HEARTBEAT":
        return heartbeat(env.source.instance_id)
    if kind == "ALERT":
        about = env.payload.metadata.get("node", env.target.instance_id)
        return alert(_seg(str(about)))
    if kind == "RESULT":
        if not isinstance(env.correlation_id, str):
            raise EnvelopeError("a RESULT needs a correlation_id", "correlation_id")
        return result(env.correlation_id)
    if kind == "TASK":
        cap = capability or env.payload.metadata.get("capability")
        if not isinstance(cap, str):
            raise EnvelopeError("a TASK needs payload.metadata.capability", "payload.metadata.capability")
        return task(cap, env.priority)
    raise EnvelopeError(f"no subject for message type {kind!r}", "message_type")


def filters_for(kind: str, instance: str | None = None, agent: str | None = None) -> list[str]:
    """Filter subjects that deliver what ``instance``/``agent`` should see of ``kind`` (plus broadcasts).

    With no instance, everything of that kind.
    """
    name = kind.lower()
    if instance is None or instance == BROADCAST:
        return [f"{ROOT}.{name}.>"]
    if name in ("status", "heartbeat", "alert"):
        return [f"{ROOT}.{name}.{instance}"]
    if name not in ("chat", "command", "sync"):
        raise EnvelopeError(f"{kind!r} is not addressed to instances", "message_type")
    tail = ".>" if name == "command" else ""
    if agent is None or agent == BROADCAST:
        return [f"{ROOT}.{name}.{instance}.>", f"{ROOT}.{name}.{ALL}.>"]
    return [
        f"{ROOT}.{name}.{instance}.{agent}{tail}",
        f"{ROOT}.{name}.{instance}.{ALL}{tail}",
        f"{ROOT}.{name}.{ALL}.{agent}{tail}",
        f"{ROOT}.{name}.{ALL}.{ALL}{tail}",
    ]


class Subject(NamedTuple):
    kind: str
    instance: str | None = None
    agent: str | None = None
    priority: int | None = None
    extra: str | None = None  # capability, correlation id or dlq type


def parse(subject: str) -> Subject:
    """Split a mesh subject into its parts; raises ``EnvelopeError`` if it is not one."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != ROOT:
        raise EnvelopeError(f"{subject!r} is not an nxs subject", "subject")
    kind, rest = parts[1], parts[2:]

    def unseg(v: str) -> str:
        return BROADCAST if v == ALL else v

    def prio(v: str) -> int:
        if len(v) == 2 and v[0] == "p" and v[1].isdigit():
            return int(v[1])
        raise EnvelopeError(f"{subject!r}: bad priority segment {v!r}", "subject")

    if kind in ("chat", "sync") and len(rest) == 2:
        return Subject(kind, unseg(rest[0]), unseg(rest[1]))
    if kind == "command" and len(rest) == 3:
        return Subject(kind, unseg(rest[0]), unseg(rest[1]), prio(rest[2]))
    if kind == "task" and len(rest) == 2:
        return Subject(kind, priority=prio(rest[1]), extra=rest[0])
    if kind == "result" and len(rest) == 1:
        return Subject(kind, extra=rest[0])
    if kind in ("status", "heartbeat", "alert") and len(rest) == 1:
        return Subject(kind, instance=rest[0])
    if kind == "dlq" and len(rest) == 2:
        return Subject(kind, instance=rest[1], extra=rest[0])
    raise EnvelopeError(f"{subject!r} does not fit the subject scheme", "subject")
