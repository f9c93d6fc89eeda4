"""Declarative JetStream asset specs and an idempotent ``ensure`` (DESIGN.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from nats.js import api as jsapi
from nats.js import errors as jse

from nxs_mesh.transport.link import Link
from nxs_mesh.transport.translate import translate_nats_errors

__all__ = ["STREAMS", "EnsureResult", "StreamSpec", "ensure_streams", "stream_for_kind"]

DAY: Final = 86400.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue", "interest"] = "limits"
    max_age: float = 30 * DAY
    duplicate_window: float = 120.0
    max_msgs_per_subject: int = -1
    allow_rollup: bool = False
    allow_msg_ttl: bool = False
    description: str = ""

    def config(self, replicas: int) -> jsapi.StreamConfig:
        return jsapi.StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=jsapi.RetentionPolicy(self.retention),
            max_age=self.max_age,
            duplicate_window=self.duplicate_window,
            max_msgs_per_subject=self.max_msgs_per_subject,
            allow_rollup_hdrs=self.allow_rollup,
            allow_msg_ttl=self.allow_msg_ttl or None,
            storage=jsapi.StorageType.FILE,
            num_replicas=replicas,
            discard=jsapi.DiscardPolicy.OLD,
        )


STREAMS: Final[tuple[StreamSpec, ...]] = (
    # The mesh sends no Nats-TTL for CHAT (history is kept; consumers enforce ttl), but a foreign
    # publisher that sets it is stored and expired by the server instead of refused.
    StreamSpec("NXS_CHAT", ("nxs.chat.>",), allow_msg_ttl=True, description="agent chat"),
    # limits retention: a command to a node that is down waits for its durable consumer (within ttl).
    StreamSpec("NXS_COMMAND", ("nxs.command.>",), max_age=7 * DAY, allow_msg_ttl=True,
               description="commands to nodes and agents"),
    StreamSpec("NXS_TASK", ("nxs.task.>",), retention="workqueue", max_age=7 * DAY, allow_msg_ttl=True,
               description="shared work queue, one consumer per capability"),
    StreamSpec("NXS_RESULT", ("nxs.result.>",), max_age=DAY, description="replies and task results"),
    StreamSpec("NXS_STATUS", ("nxs.status.>",), max_msgs_per_subject=1, allow_rollup=True,
               description="last status per node"),
    StreamSpec("NXS_HEARTBEAT", ("nxs.heartbeat.>",), max_age=DAY, max_msgs_per_subject=1,
               allow_rollup=True, allow_msg_ttl=True, description="last heartbeat per node"),
    StreamSpec("NXS_SYNC", ("nxs.sync.>",), allow_msg_ttl=True, description="handoff and state sync"),
    StreamSpec("NXS_ALERT", ("nxs.alert.>",), description="the Doctor's alerts"),
    StreamSpec("NXS_DLQ", ("nxs.dlq.>",), description="dead letters, reason in headers"),
)

_BY_KIND: Final = {s.name.removeprefix("NXS_").lower(): s for s in STREAMS}


def stream_for_kind(kind: str) -> StreamSpec:
    try:
        return _BY_KIND[kind.lower()]
    except KeyError:
        from nxs_mesh.wire.errors import StreamError

        raise StreamError(f"no stream for {kind!r}; known: {', '.join(_BY_KIND)}") from None


@dataclass(frozen=True)
class EnsureResult:
    stream: str
    action: Literal["created", "updated", "unchanged", "conflict"]
    detail: str = ""


# Settings the server refuses to change on an existing stream: a difference is a conflict.
_IMMUTABLE: Final = ("retention", "storage")
# Settings we own and reconcile; anything else an operator set is left alone.
_MANAGED: Final = (
    "subjects", "max_age", "duplicate_window", "max_msgs_per_subject", "allow_rollup_hdrs",
    "allow_msg_ttl", "description", "num_replicas",
)


def _plain(value: object) -> object:
    """Enums as their wire value (stream info answers may carry plain strings)."""
    return getattr(value, "value", value)


def _differences(have: jsapi.StreamConfig, want: jsapi.StreamConfig) -> list[str]:
    diffs = []
    for key in _MANAGED:
        a, b = getattr(have, key), getattr(want, key)
        if key == "subjects":
            a, b = sorted(a or []), sorted(b or [])
        if key == "allow_msg_ttl":
            a, b = bool(a), bool(b)
        if key in ("max_age", "duplicate_window"):
            a, b = round(a or 0, 3), round(b or 0, 3)
        if a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    return diffs


async def ensure_streams(
    link: Link, *, replicas: int = 1, specs: tuple[StreamSpec, ...] = STREAMS, update: bool = True
) -> list[EnsureResult]:
    """Create missing streams, update older configs (unless ``update`` is False: a secure node's streams
    are admin's, who updates them with ``nxs init``), report conflicts. Idempotent."""
    js = link.js
    results = []
    for spec in specs:
        want = spec.config(replicas)
        with translate_nats_errors(f"stream {spec.name}"):
            try:
                info = await js.stream_info(spec.name)
            except jse.NotFoundError:
                await js.add_stream(want)
                results.append(EnsureResult(spec.name, "created"))
                continue
            have = info.config
            conflicts = [
                f"{key} is {_plain(getattr(have, key))!r}, wanted {_plain(getattr(want, key))!r}"
                for key in _IMMUTABLE
                if _plain(getattr(have, key)) != _plain(getattr(want, key))
            ]
            if conflicts:
                results.append(EnsureResult(spec.name, "conflict", "; ".join(conflicts)))
                continue
            diffs = _differences(have, want)
            if not diffs or not update:
                results.append(EnsureResult(spec.name, "unchanged"))
                continue
            try:
                await js.update_stream(want)
            except jse.APIError as exc:
                results.append(EnsureResult(spec.name, "conflict", f"{'; '.join(diffs)}: {exc.description}"))
                continue
            results.append(EnsureResult(spec.name, "updated", "; ".join(diffs)))
    return results
