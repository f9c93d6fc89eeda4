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

import asyncio
import contextlib
from collections.abc import Iterator

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
    "mesh_error_for",
    "translate_nats_errors",
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


def _mapping() -> list[tuple[type[BaseException], type[MeshError]]]:
    # Imported lazily so that importing the error tree stays cheap.
    from nats import errors as ne
    from nats.js import errors as jse

    return [
        (jse.NoStreamResponseError, JetStreamUnavailable),
        (jse.ServiceUnavailableError, JetStreamUnavailable),
        (jse.ServerError, JetStreamUnavailable),
        (jse.NotFoundError, StreamError),
        (jse.BadRequestError, StreamError),
        (jse.APIError, StreamError),
        (ne.NoRespondersError, NoResponders),
        (ne.TimeoutError, MeshTimeout),
        (ne.ConnectionClosedError, ClosedError),
        (ne.ConnectionDrainingError, ClosedError),
        (ne.ConnectionReconnectingError, NotConnectedError),
        (ne.StaleConnectionError, BrokenError),
        (ne.OutboundBufferLimitError, PublishError),
        (ne.NoServersError, ConnectError),
        (ne.AuthorizationError, ConnectError),
        (ne.MaxPayloadError, PublishError),
        (ne.Error, MeshError),
    ]


@contextlib.contextmanager
def translate_nats_errors(what: str) -> Iterator[None]:
    """Map nats-py (and asyncio timeout) exceptions to the mesh tree where they enter."""
    try:
        yield
    except Exception as exc:
        ours = mesh_error_for(exc, what)
        if ours is None:
            raise
        raise ours from exc


def mesh_error_for(exc: Exception, what: str) -> MeshError | None:
    """The mesh error for a foreign ``exc`` (None: raise it unchanged). For hot paths, where a plain
    ``try/except`` costs less than the ``translate_nats_errors`` context manager:

        except Exception as exc:
            if (ours := mesh_error_for(exc, "ack")) is None:
                raise
            raise ours from exc
    """
    if isinstance(exc, MeshError):
        return None
    if isinstance(exc, asyncio.TimeoutError):  # nats-py raises this from fetch/flush paths too
        return MeshTimeout(f"{what}: timed out")
    for foreign, ours in _mapping():
        if isinstance(exc, foreign):
            detail = str(exc) or type(exc).__name__
            return ours(f"{what}: {detail}")
    return None
