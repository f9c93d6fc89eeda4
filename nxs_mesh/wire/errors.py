"""One error tree for the whole mesh. Callers never see nats-py exceptions (``transport.translate``
maps them where they enter).

    MeshError
    ├── ConfigError                 bad configuration value (names the setting)
    ├── EnvelopeError               an envelope or id failed validation (names the field)
    │   └── UnknownMessageType
    ├── ConnectError                could not reach any server
    ├── NotConnectedError           the client is not open now (never opened, or reconnecting)
    ├── ClosedError                 we closed it: used after close()
    ├── BrokenError                 the peer went away: the connection broke under us
    ├── MeshTimeout                 an operation did not complete in time
    │   └── NoResponders            a request found nobody listening
    ├── PublishError                the server did not store a message
    │   └── OutboxFull              the offline outbox reached its bound
    ├── StreamError                 JetStream asset problem
    │   └── StreamConflict          an existing asset conflicts with the wanted config
    ├── JetStreamUnavailable        server reachable, JetStream not (no quorum, disabled)
    ├── RemoteError                 a remote handler answered with an error
    │   └── CallEnded               a task or command ended without a result: failed, cancelled, expired, orphaned
    ├── PermissionDenied            the server refused this identity an operation (names the subject)
    ├── FileError                   an Object Store file could not be stored or read
    │   ├── FileNotFound            no such file in the bucket (or it was deleted)
    │   └── FileCorrupt             a stored file fails its checks: chunks missing, size or digest wrong
    ├── AgentError                  the agent registry (NXS_AGENTS) cannot do what was asked
    │   ├── AgentNotFound           no such agent is registered
    │   ├── AgentOrphaned           the agent's owner died: nobody runs it now
    │   ├── AgentOwned              another live node owns the agent (registration refused)
    │   └── HandoffError            a handoff did not happen; the agent stays with its last committed owner
    │       ├── HandoffRefused      the target refused the offer (capacity, capability, version)
    │       └── HandoffTimeout      a step got no answer in time (``step`` names it); rolled back
    ├── TaskStateError              a task cannot move to the state asked (already ended, not its submitter)
    ├── NoCapacity                  no live node has the capability a gather needs
    ├── SecurityError               message security (signatures, seals, rights)
    │   ├── VerificationError       an envelope's signature, signer or freshness does not hold
    │   ├── SealError               a sealed payload cannot be sealed or opened
    │   └── NotAuthorized           the signer has no right to this command or capability
    └── ServerError                 the embedded nats-server failed to start or stop
        └── PortInUse

Handler outcomes are not errors: a handler *signals* how its message ends by raising one of

    HandlerSignal
    ├── Retry                       nak: redeliver after ``delay``
    ├── Reject                      terminate and dead-letter with the reason
    └── Abandon                     neither ack nor nak: another delivery owns the message now

and ``client.delivery`` is the one place that decides what each means.
"""

from __future__ import annotations

__all__ = [
    "Abandon",
    "AgentError",
    "AgentNotFound",
    "AgentOrphaned",
    "AgentOwned",
    "BrokenError",
    "CallEnded",
    "ClosedError",
    "ConfigError",
    "ConnectError",
    "EnvelopeError",
    "FileCorrupt",
    "FileError",
    "HandoffError",
    "HandoffRefused",
    "HandoffTimeout",
    "FileNotFound",
    "HandlerSignal",
    "JetStreamUnavailable",
    "MeshError",
    "MeshTimeout",
    "NoCapacity",
    "PermissionDenied",
    "NoResponders",
    "NotAuthorized",
    "NotConnectedError",
    "OutboxFull",
    "PortInUse",
    "PublishError",
    "Reject",
    "RemoteError",
    "Retry",
    "SealError",
    "SecurityError",
    "ServerError",
    "StreamConflict",
    "StreamError",
    "TaskStateError",
    "UnknownMessageType",
    "VerificationError",
]


class MeshError(Exception):
    """Base of every error the mesh raises."""


class ConfigError(MeshError):
    """A configuration value is wrong; ``setting`` names it."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {message}")


class EnvelopeError(MeshError):
    """An envelope or id failed validation; ``field`` is the dotted path of the offending field (or None)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


class UnknownMessageType(EnvelopeError):
    """``message_type`` is none of the contract's types."""


class ConnectError(MeshError):
    """No server of the list answered (or it refused our credentials)."""


class NotConnectedError(MeshError):
    """Not connected right now: never opened, or between a disconnect and the reconnect."""


class ClosedError(MeshError):
    """We closed it: the object was used after ``close()``/``stop()``."""


class BrokenError(MeshError):
    """The peer went away: the connection broke under an operation (stale, closed by the server)."""


class MeshTimeout(MeshError):
    """An operation did not complete within its timeout."""


class NoResponders(MeshTimeout):
    """A request reached the server but nobody subscribes to its subject."""


class PublishError(MeshError):
    """The server did not store a message (and said so, or gave no usable acknowledgement)."""


class OutboxFull(PublishError):
    """The offline outbox reached its bound; nothing more can be queued until it drains."""


class StreamError(MeshError):
    """A JetStream asset (stream, consumer, bucket) is missing or was refused."""


class StreamConflict(StreamError):
    """An existing asset has a config we cannot change into the wanted one."""


class JetStreamUnavailable(MeshError):
    """The server answers but JetStream does not (no quorum, leader election, disabled)."""


class RemoteError(MeshError):
    """The remote side handled the request and answered with an error."""

    def __init__(self, message: str, node: str | None = None) -> None:
        self.node = node
        super().__init__(f"{node}: {message}" if node else message)


class CallEnded(RemoteError):
    """A task or command ended without a result; ``state`` says how: ``failed``, ``cancelled``, ``expired``
    or ``orphaned`` (its worker or target died with no retry left). Its caller is told once."""

    def __init__(self, message: str, node: str | None = None, *, state: str, task_id: str | None = None) -> None:
        super().__init__(message, node)
        self.state, self.task_id = state, task_id


class PermissionDenied(MeshError):
    """The server's permissions for this identity refuse an operation on ``subject``."""

    def __init__(self, operation: str, subject: str, what: str = "") -> None:
        self.operation, self.subject = operation, subject
        lead = f"{what}: " if what else ""
        super().__init__(f"{lead}permission denied: this identity may not {operation} {subject!r} "
                         "(the mesh's server permissions refuse it; admin operations need the admin identity)")


class FileError(MeshError):
    """An Object Store file could not be stored or read (names the file)."""


class FileNotFound(FileError):
    """No file of that name in the bucket (never stored, or deleted)."""


class FileCorrupt(FileError):
    """A stored file fails its checks on read: chunks missing, size or SHA-256 digest not as its meta says."""


class AgentError(MeshError):
    """The agent registry cannot do what was asked (names the agent)."""

    def __init__(self, message: str, agent: str) -> None:
        super().__init__(message)
        self.agent = agent


class AgentNotFound(AgentError):
    """No agent of that id is registered in NXS_AGENTS."""


class AgentOrphaned(AgentError):
    """The agent's owner died (the Doctor marked it orphaned): nobody runs it now."""


class AgentOwned(AgentError):
    """Another live node owns the agent ``active``: it is not taken from it."""


class HandoffError(AgentError):
    """A handoff did not complete; the agent stays with its last committed owner (``step`` names where)."""

    def __init__(self, message: str, agent: str, step: str = "") -> None:
        super().__init__(message, agent)
        self.step = step


class HandoffRefused(HandoffError):
    """The target refused the offer (capacity, capability, version): nothing changed."""


class HandoffTimeout(HandoffError):
    """A step of the handoff got no answer within its timeout; rolled back to the last committed owner."""


class TaskStateError(MeshError):
    """A task cannot move to the state asked for: it already ended, or it runs where that is unsupported."""

    def __init__(self, message: str, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class NoCapacity(MeshError):
    """No live node (by the nodes' statuses and heartbeats) has the capability asked for."""

    def __init__(self, capability: str) -> None:
        super().__init__(f"no live node has capability {capability!r} (see `nxs nodes`)")
        self.capability = capability


class SecurityError(MeshError):
    """Message security refused something (see the subclasses); the text is the reason."""


class VerificationError(SecurityError):
    """An envelope is unsigned, wrongly signed, replayed, stale, or not signed by its ``source``."""


class SealError(SecurityError):
    """A sealed payload cannot be sealed (no key for the target) or opened (not for us, corrupted)."""


class NotAuthorized(SecurityError):
    """The signer holds no policy entry or grant for this command or task capability."""


class ServerError(MeshError):
    """The embedded nats-server failed to start, check or stop."""


class PortInUse(ServerError):
    """The port the embedded server wants is taken."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        super().__init__(
            f"port {port} on {host} is already in use; choose another with --port N "
            f"(or NXS_PORT=N), or stop whatever listens there"
        )


class HandlerSignal(Exception):  # noqa: N818 - control flow, not an error: never a MeshError
    """Base of what a handler raises to decide how its message ends (see the tree above)."""


class Retry(HandlerSignal):
    """Have the message redelivered after ``delay`` seconds (counts as a delivery)."""

    def __init__(self, delay: float = 1.0, reason: str = "") -> None:
        self.delay, self.reason = delay, reason
        super().__init__(reason or f"retry in {delay}s")


class Reject(HandlerSignal):
    """Terminate the message and send it to the dead-letter stream with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Abandon(HandlerSignal):
    """Leave the message alone: no ack, no nak (a fenced worker: another delivery owns it now)."""
