"""``PUT/GET /v1/files/{name}`` streams: a 20 MB file goes up and comes back intact while the process
(gateway and client together) never holds more than a fraction of it.

How the bound is shown: the gateway runs in this process (uvicorn in the test's loop) and the client
sends and reads the body as a stream of 64 KiB pieces it makes and drops as it goes, so ``tracemalloc``'s
peak over the upload, and over the download, counts everything both sides held at once. A gateway that
read the body (or built the response) whole would hold 20 MiB; the bound is half that. (Measured: about
8.7 MiB up, 4.9 MiB down: the Object Store keeps 64 of the gateway's 64 KiB chunks in flight on put and
reads 32 stored chunks per pull on get; the rest is the connections' buffers.)
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator

import pytest
from gateway_support import Gate, assert_json_error, running_gateway

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.testing import unique_id

pytestmark = pytest.mark.timeout(120)

SIZE = 20 * 1024 * 1024
PIECE = 64 * 1024
BOUND = SIZE // 2


@pytest.fixture
async def gate(mesh: Mesh, mesh_config: MeshConfig) -> AsyncIterator[Gate]:
    async with running_gateway(mesh_config.replace(instance_id="gw"), max_file=SIZE + 1) as g:
        yield g


def _piece(i: int) -> bytes:
    """Deterministic, incompressible-looking content, made on demand (never the whole file)."""
    return hashlib.shake_256(i.to_bytes(8, "big")).digest(PIECE)


async def _body(sha: hashlib._Hash) -> AsyncIterator[bytes]:
    for i in range(SIZE // PIECE):
        data = _piece(i)
        sha.update(data)
        yield data


async def test_a_20_mb_file_goes_up_and_down_streamed_in_bounded_memory(gate: Gate, mesh: Mesh):
    name = f"{unique_id('big')}/data.bin"
    sent = hashlib.sha256()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        r = await gate.client.put(f"/v1/files/{name}", content=_body(sent))
        _, up_peak = tracemalloc.get_traced_memory()
        assert r.status_code == 201, r.text
        assert r.json()["size"] == SIZE and r.headers["location"] == f"/v1/files/{name}"
        got, size = hashlib.sha256(), 0
        tracemalloc.reset_peak()
        async with gate.client.stream("GET", f"/v1/files/{name}") as resp:
            assert resp.status_code == 200 and int(resp.headers["content-length"]) == SIZE
            etag = resp.headers["etag"]
            async for chunk in resp.aiter_raw():
                got.update(chunk)
                size += len(chunk)
        _, down_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\nMEASURED 20 MiB through the gateway: peak traced memory up {up_peak / 2**20:.1f} MiB, "
          f"down {down_peak / 2**20:.1f} MiB")
    assert size == SIZE and got.digest() == sent.digest()
    assert etag.strip('"') == (await mesh.files.info(name)).digest  # what the store checked on read
    assert up_peak < BOUND and down_peak < BOUND, (up_peak, down_peak)


async def test_files_are_listed_deleted_and_missing_ones_are_404(gate: Gate, mesh: Mesh):
    name = unique_id("small")
    r = await gate.client.put(f"/v1/files/{name}", content=b"hello", params={"description": "a greeting"})
    assert r.status_code == 201 and r.json()["description"] == "a greeting"
    assert (await mesh.files.info(name)).size == 5
    listed = {f["name"]: f for f in (await gate.client.get("/v1/files")).json()["files"]}
    assert listed[name]["size"] == 5
    assert (await gate.client.get(f"/v1/files/{name}")).content == b"hello"
    head = await gate.client.head(f"/v1/files/{name}")
    assert head.status_code == 200 and head.headers["content-length"] == "5" and head.content == b""
    assert head.headers["etag"] == f'"{(await mesh.files.info(name)).digest}"'
    assert (await gate.client.delete(f"/v1/files/{name}")).json()["name"] == name
    assert_json_error(await gate.client.get(f"/v1/files/{name}"), 404, None)


async def test_an_upload_over_the_file_limit_stores_nothing(mesh: Mesh, mesh_config: MeshConfig):
    name = unique_id("toobig")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit is counted as it streams
        for _ in range(8):
            yield b"x" * 1000

    async with running_gateway(mesh_config.replace(instance_id="gw"), max_file=4000) as g:
        assert_json_error(await g.client.put(f"/v1/files/{name}", content=chunked()), 413, "body")
        assert name not in {f["name"] for f in (await g.client.get("/v1/files")).json()["files"]}
