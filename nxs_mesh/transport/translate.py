"""Where nats-py's exceptions enter the mesh: each is translated to the one error tree (``wire.errors``).

Only the transport layer calls nats-py, so only the transport layer uses this module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from nxs_mesh.wire.errors import (
    BrokenError,
    ClosedError,
    ConnectError,
    JetStreamUnavailable,
    MeshError,
    MeshTimeout,
    NoResponders,
    NotConnectedError,
    PublishError,
    StreamError,
)

__all__ = ["mesh_error_for", "translate_nats_errors"]


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
    except Exception as exc:  # translated, never swallowed
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
