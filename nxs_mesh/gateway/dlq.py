"""The dead-letter queue over HTTP, as ``nxs dlq``: ``GET /v1/dlq`` lists dead letters with their reason,
``POST /v1/dlq/{id}/replay`` publishes one back to its original subject and removes it (the web
console's DLQ view uses both). The work is ``nxs_mesh.client.dlq``'s; this only maps it to HTTP."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response

from nxs_mesh.client.dlq import list_dead_letters, replay_dead_letter
from nxs_mesh.gateway.errors import ApiError
from nxs_mesh.gateway.inputs import int_param
from nxs_mesh.gateway.outputs import json_response
from nxs_mesh.gateway.runtime import gateway_of
from nxs_mesh.wire.contract import DLQ_STREAM
from nxs_mesh.wire.errors import MeshError

__all__ = ["get_dead_letters", "replay_dead_letter_route"]


async def get_dead_letters(request: Request) -> Response:
    """The last ``last`` dead letters (default 100), oldest first, each as ``nxs dlq list --json``."""
    mesh, _ = gateway_of(request).mesh_for(request)
    last = int_param(request, "last", 100, low=1, high=1000)
    got = [d.as_dict() async for d in list_dead_letters(mesh, last=last)]
    return json_response({"dead_letters": got, "count": len(got)})


async def replay_dead_letter_route(request: Request) -> Response:
    """404 for an id not in the DLQ (already replayed, or never there); 409 for one that cannot go back
    (no original subject, or a truncated copy)."""
    mesh, _ = gateway_of(request).mesh_for(request)
    raw = request.path_params["dlq_id"]
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, f"{raw!r} is not a dead letter id (a stream sequence, see GET /v1/dlq)", field="dlq_id")
    seq = int(raw)
    if await mesh.admin.message(DLQ_STREAM, seq) is None:
        raise ApiError(404, f"no dead letter with id {seq} (already replayed?)", field="dlq_id")
    try:
        done = await replay_dead_letter(mesh, seq)
    except MeshError as exc:
        if type(exc) is not MeshError:  # a connection, permission or timeout error: its own status
            raise
        raise ApiError(409, str(exc), field="dlq_id") from None
    return json_response(asdict(done))
