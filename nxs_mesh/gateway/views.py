"""Read-only views: ``GET /v1/nodes`` (presence, as ``nxs nodes``), ``GET /v1/alerts`` (the Doctor's
alerts, as ``nxs alerts``), ``GET /v1/health`` (the gateway's own connections; ``?deep=1`` adds the
one-shot mesh check of ``nxs doctor``). Health needs no token: it says nothing about the mesh's data."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from nxs_mesh.gateway.inputs import int_param, replay_start
from nxs_mesh.gateway.outputs import json_response
from nxs_mesh.gateway.runtime import GatewayState, gateway_of
from nxs_mesh.node.alerts import alert_record
from nxs_mesh.node.checkup import check_mesh, list_nodes
from nxs_mesh.version import VERSION
from nxs_mesh.wire.envelope import check_id

__all__ = ["get_alerts", "get_health", "get_nodes"]


async def get_nodes(request: Request) -> Response:
    mesh, _ = gateway_of(request).mesh_for(request)
    return json_response({"nodes": [v.as_dict() for v in await list_nodes(mesh)]})


async def get_alerts(request: Request) -> Response:
    """Stored alerts, oldest first, at most ``limit`` (from ``since``, or the ``last`` N; ``node`` filters)."""
    mesh, _ = gateway_of(request).mesh_for(request)
    node = request.query_params.get("node") or None
    if node is not None:
        check_id(node, "node")
    limit = int_param(request, "limit", 100, low=1, high=1000)
    start = replay_start(request)
    got: list[dict[str, Any]] = []
    records = mesh.tail("alert", instance=node, seq=start.seq, since=start.since, last=start.last)
    try:
        async for rec in records:
            item = alert_record(rec)
            if item is not None:
                got.append(item)
            if len(got) == limit:
                break
    finally:
        await records.aclose()  # type: ignore[attr-defined]  # an async generator
    return json_response({"alerts": got, "count": len(got)})


async def get_health(request: Request) -> Response:
    """200 while every identity's connection is up, 503 otherwise."""
    gw = gateway_of(request)
    meshes = gw.meshes.values()
    connected = sum(1 for m in meshes if m.is_connected)
    up = gw.state is GatewayState.OPEN and connected == len(meshes)
    # Counts only: who the identities are and where they connect is not for callers without a token.
    body: dict[str, Any] = {"status": "ok" if up else "down", "version": VERSION, "gateway": gw.state.value,
                            "connections": {"up": connected, "total": len(meshes)}, "feeds": gw.active_feeds}
    if up and request.query_params.get("deep") in ("1", "true", "yes"):
        mesh, _ = gw.mesh_for(request)  # the deep check reads the mesh: the caller's identity does
        body["mesh"] = (await check_mesh(mesh)).as_dict()
    return json_response(body, status=200 if up else 503)
