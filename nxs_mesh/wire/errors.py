"""One error tree for the whole mesh. Callers never see nats-py exceptions.

    MeshError
    ├── ConfigError                 bad configuration value (names the setting)
    ├── EnvelopeError               an envelope or id failed validation (names the field)
    │   └── UnknownMessageType
    ├── ConnectError                could not reach any server
    ├── NotConnectedError           the client is not open (never opened, or closed by us)
    ├── ClosedError                 used after close()
    ├── BrokenError                 the server went away under us
    ├── MeshTimeout                 an operation did not complete in time
    │   └── NoResponders            a request found nobody listening
    ├── PublishError                the server did not store a message
    │   └── OutboxFull              the offline outbox reached its bound
    ├── StreamError                 JetStream asset problem
    │   └── StreamConflict          an existing asset conflicts with the wanted config
    ├── JetStreamUnavailable        server reachable, JetStream not (no quorum, disabled)
    ├── RemoteError                 a remote handler answered with an error
    └── ServerError                 the embedded nats-server failed to start or stop
        └── PortInUse

Handler control flow is not an error: a handler raises ``Retry`` or ``Reject`` (see ``consumer``).
"""

from __future__ import annotations

__all__ = [
    "BrokenError",
    "ClosedError",
    "ConfigError",
    "ConnectError",
    "EnvelopeError",
    "JetStreamUnavailable",
    "MeshError",
    "MeshTimeout",
    "NoResponders",
    "NotConnectedError",
    "OutboxFull",
    "PortInUse",
    "PublishError",
    "RemoteError",
    "ServerError",
    "StreamConflict",
    "StreamError",
    "UnknownMessageType",
]


class MeshError(Exception):
    """Base of every error the mesh raises."""


class ConfigError(MeshError):
    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {message}")


class EnvelopeError(MeshError):
    """Validation failure; ``field`` is the dotted path of the offending field (or None)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


class UnknownMessageType(EnvelopeError):
    pass


class ConnectError(MeshError):
    pass


class NotConnectedError(MeshError):
    pass


class ClosedError(MeshError):
    pass


class BrokenError(MeshError):
    pass


class MeshTimeout(MeshError):
    pass


class NoResponders(MeshTimeout):
    pass


class PublishError(MeshError):
    pass


class OutboxFull(PublishError):
    pass


class StreamError(MeshError):
    pass


class StreamConflict(StreamError):
    pass


class JetStreamUnavailable(MeshError):
    pass


class RemoteError(MeshError):
    """The remote side handled the request and answered with an error."""

    def __init__(self, message: str, node: str | None = None) -> None:
        self.node = node
        super().__init__(f"{node}: {message}" if node else message)


class ServerError(MeshError):
    pass


class PortInUse(ServerError):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        super().__init__(
            f"port {port} on {host} is already in use; choose another with --port N "
            f"(or NXS_PORT=N), or stop whatever listens there"
        )
