"""The A2A routes in the gateway's ``/openapi.json`` (issue 13 part 3's document, issue 15's binding): listed
exactly when the gateway mounts ``/a2a`` (the a2a-sdk installed), and each documented operation answers on
a real gateway, with the documented JSON error for an agent nobody registered.
(``tests/test_gateway_api.py`` checks the rest of the document against the API routes both ways.)"""

from __future__ import annotations

from typing import Final

import pytest
from gateway_support import assert_json_error, running_gateway

from nxs_mesh import Mesh
from nxs_mesh.gateway.openapi import A2A_METHODS, a2a_installed, openapi_document

#: What the gateway's ``/a2a`` mount serves (``gateway.a2a``), as (path, method).
A2A_OPS: Final = {("/a2a/{agent}/.well-known/agent-card.json", "get"), ("/a2a/{agent}", "post")}


def _ops(doc: dict) -> set[tuple[str, str]]:
    return {(p, m) for p, ops in doc["paths"].items() for m in ops}


def test_the_a2a_routes_are_documented_only_when_mounted():
    assert A2A_OPS <= _ops(openapi_document(a2a=True))
    assert not {p for p in openapi_document(a2a=False)["paths"] if p.startswith("/a2a")}
    assert (A2A_OPS <= _ops(openapi_document())) == a2a_installed()
    rpc = openapi_document(a2a=True)["paths"]["/a2a/{agent}"]["post"]
    schema = rpc["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["method"]["enum"] == list(A2A_METHODS)
    assert set(rpc["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}


async def test_each_documented_a2a_operation_answers_on_the_gateway(mesh: Mesh):
    if not a2a_installed():
        pytest.skip("the a2a extra (a2a-sdk) is not installed: the gateway mounts no /a2a")
    async with running_gateway(mesh) as gate:
        doc = (await gate.client.get("/openapi.json")).json()
        assert A2A_OPS <= _ops(doc)
        for path, method in sorted(A2A_OPS):
            op = doc["paths"][path][method]
            assert "404" in op["responses"] and [p["name"] for p in op["parameters"]] == ["agent"]
            url = path.replace("{agent}", "agent:nobody")
            body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "t"}}
            answer = await (gate.client.get(url) if method == "get" else gate.client.post(url, json=body))
            assert_json_error(answer, 404, "agent")  # the route exists and answers as documented
