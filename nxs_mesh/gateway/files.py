"""``PUT/GET/DELETE /v1/files/{name}`` and ``GET /v1/files``: the mesh's Object Store (``mesh.files``), streamed.

An upload goes from the request body to the store chunk by chunk as it arrives (``mesh.files.put``
of an async iterator; uvicorn stops reading the socket while the store is behind), a download
from the store to the response chunk by chunk: neither holds the file, only the Object Store's
window of chunks in flight. The SHA-256 travels as the ``ETag`` and ``Nxs-Digest`` of a download; a
download whose stored chunks fail their check is cut off (the body ends short of
``Content-Length``), since its status was sent with the first chunk.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from nxs_mesh.client.files import FileInfo
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.gateway.inputs import bounded_stream
from nxs_mesh.gateway.outputs import json_response
from nxs_mesh.gateway.runtime import gateway_of
from nxs_mesh.wire.envelope import check_id

__all__ = ["delete_file", "get_file", "list_files", "put_file"]

log = logging.getLogger("nxs_mesh.gateway")


async def put_file(request: Request) -> Response:
    gw = gateway_of(request)
    mesh, _ = gw.mesh_for(request)
    name = request.path_params["name"]
    to = request.query_params.get("to")
    if to is not None:
        check_id(to, "to")
    body = bounded_stream(request, gw.options.max_file)
    info = await mesh.files.put(body, name=name, description=request.query_params.get("description", ""), to=to,
                                chunk_size=gw.options.file_chunk)
    return json_response(info.as_dict(), status=201, headers={"Location": f"/v1/files/{name}"})


def _headers(info: FileInfo) -> dict[str, str]:
    return {"Content-Length": str(info.size), "ETag": f'"{info.digest}"', "Nxs-Digest": info.digest}


async def _chunks(mesh: Mesh, name: str) -> AsyncIterator[bytes]:
    stream = mesh.files.stream(name)
    async with contextlib.aclosing(stream):  # type: ignore[type-var]  # an async generator
        async for data in stream:
            yield data


async def get_file(request: Request) -> Response:
    gw = gateway_of(request)
    mesh, _ = gw.mesh_for(request)
    name = request.path_params["name"]
    info = await mesh.files.info(name)  # 404 now, before a status is sent
    if request.method == "HEAD":  # the headers only: reading the chunks would be wasted
        return Response(status_code=200, headers=_headers(info), media_type="application/octet-stream")
    return StreamingResponse(_chunks(mesh, name), media_type="application/octet-stream", headers=_headers(info))


async def list_files(request: Request) -> Response:
    mesh, _ = gateway_of(request).mesh_for(request)
    return json_response({"files": [f.as_dict() for f in await mesh.files.list()]})


async def delete_file(request: Request) -> Response:
    mesh, _ = gateway_of(request).mesh_for(request)
    return json_response((await mesh.files.delete(request.path_params["name"])).as_dict())
