"""The gateway's one error shape, ``{"error": "...", "field": "..."}``, and the HTTP status of each mesh error.

Every failure an endpoint meets leaves as JSON with a proper status; nothing leaves as a stack trace
(an unexpected exception is logged here and answered 500 with a one-line message).

    raise ApiError(400, "not a number", field="limit")
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nxs_mesh.wire.errors import (
    AgentError,
    AgentNotFound,
    BrokenError,
    ConfigError,
    ConnectError,
    EnvelopeError,
    FileCorrupt,
    FileError,
    FileNotFound,
    JetStreamUnavailable,
    MeshError,
    MeshTimeout,
    NoResponders,
    NotAuthorized,
    NotConnectedError,
    PermissionDenied,
    RemoteError,
    StreamError,
    TaskStateError,
)

__all__ = ["ApiError", "error_response", "exception_handlers", "status_of"]

log = logging.getLogger("nxs_mesh.gateway")


class ApiError(Exception):
    """An HTTP answer other than success: ``status``, a message, and the request field it is about."""

    def __init__(self, status: int, error: str, *, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.field, self.headers = status, error, field, headers


# Most specific first: NoResponders is a MeshTimeout, AgentNotFound an AgentError, FileNotFound a FileError.
_STATUS: tuple[tuple[type[MeshError], int], ...] = (
    (EnvelopeError, 400),
    (ConfigError, 400),
    (PermissionDenied, 403),
    (NotAuthorized, 403),
    (NoResponders, 404),
    (FileNotFound, 404),
    (AgentNotFound, 404),
    (AgentError, 409),
    (TaskStateError, 409),
    (MeshTimeout, 504),
    (RemoteError, 502),
    (FileCorrupt, 502),
    (FileError, 400),
    (ConnectError, 503),
    (NotConnectedError, 503),
    (BrokenError, 503),
    (JetStreamUnavailable, 503),
    (StreamError, 503),
)


def status_of(exc: MeshError) -> int:
    """The HTTP status a mesh error is answered with (500 for one with no better meaning)."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_response(status: int, error: str, field: str | None = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "field": field, **extra}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.field, exc.headers)


async def _mesh_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MeshError)
    status = status_of(exc)
    field = exc.field if isinstance(exc, EnvelopeError) else exc.setting if isinstance(exc, ConfigError) else None
    extra: dict[str, Any] = {}
    if isinstance(exc, RemoteError) and exc.node:
        extra["node"] = exc.node
    if isinstance(exc, PermissionDenied):
        extra["subject"] = exc.subject
    if status == 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(status, str(exc), field, **extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), None, dict(exc.headers or {}) or None)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__} (logged by the gateway)")


def exception_handlers() -> dict[Any, Any]:
    """Starlette's ``exception_handlers``: every error answered as JSON."""
    return {ApiError: _api_error, MeshError: _mesh_error, HTTPException: _http_error, Exception: _unexpected}
