"""Helpers for the gateway tests: a real uvicorn server on a free port with an httpx client, and an
SSE reader. (No tests here.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.config import MeshConfig
from nxs_mesh.gateway import GatewayOptions, GatewayServer, TokenTable, create_app


@dataclass
class Gate:
    server: GatewayServer
    client: httpx.AsyncClient

    @property
    def gateway(self):
        return self.server.gateway


@contextlib.asynccontextmanager
async def running_gateway(source: Mesh | MeshConfig, *, tokens: TokenTable | None = None,
                          **options: Any) -> AsyncIterator[Gate]:
    app = create_app(source, tokens=tokens, options=GatewayOptions(**options))
    async with GatewayServer(app, port=0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            yield Gate(server, client)


@dataclass
class Event:
    id: str | None
    event: str | None
    data: str


async def sse_events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a text/event-stream response (comments, i.e. pings, skipped)."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Event((fields.get("id") or [None])[-1], (fields.get("event") or [None])[-1],
                            "\n".join(fields["data"]))
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))


def assert_json_error(response: httpx.Response, status: int, field: str | None = ...) -> dict[str, Any]:  # type: ignore[assignment]
    """The response is our JSON error with ``status`` (and ``field``, when given): never a stack trace."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert "field" in body, body
    assert "Traceback" not in response.text and 'File "' not in response.text, response.text
    if field is not ...:
        assert body["field"] == field, body
    return body
