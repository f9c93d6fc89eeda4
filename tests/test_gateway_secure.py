"""Bearer tokens on a secure three-server cluster (rendered as `nxs deploy render --secure` does): each
token acts as its mesh identity through that identity's own credentials, so the servers' permission
table decides (403), and a caller without a known token gets nowhere (401)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from gateway_support import Gate, assert_json_error, running_gateway

from nxs_mesh import Mesh
from nxs_mesh.gateway import TokenTable
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.provision import provision
from nxs_mesh.testing.secure import SecureCluster
from nxs_mesh.wire.envelope import Source, encode, new_envelope

pytestmark = pytest.mark.timeout(120)

ADMIN, N1 = "admin-token-0123456789abcdef", "n1-token-0123456789abcdef"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    with SecureCluster(tmp_path_factory.mktemp("gw-secure")) as sc:
        async def go() -> None:
            async with Mesh(sc.config("admin")) as admin:
                await provision(admin, ["n1", "n2", "n3"])

        asyncio.run(go())
        yield sc


def _tokens_file(sc: SecureCluster, path: Path) -> Path:
    rows = [(ADMIN, "admin"), (N1, "n1")]
    path.write_text("".join(f'[[token]]\ntoken = "{t}"\nidentity = "{who}"\n'
                            f'config = "{sc.layout.node_dir(who) / "nxs.toml"}"\n\n' for t, who in rows))
    return path


@pytest.fixture
async def gate(cluster: SecureCluster, tmp_path: Path) -> AsyncIterator[Gate]:
    tokens = TokenTable.load(_tokens_file(cluster, tmp_path / "tokens.toml"), cluster.config("n1"),
                             servers=tuple(cluster.urls))
    async with running_gateway(cluster.config("n1"), tokens=tokens) as g:
        yield g


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_no_known_token_no_access(gate: Gate):
    missing = assert_json_error(await gate.client.get("/v1/nodes"), 401, "Authorization")
    assert "Bearer" in missing["error"]
    r = await gate.client.get("/v1/nodes", headers=_as("not-a-token-of-ours-at-all"))
    assert_json_error(r, 401, "Authorization")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_json_error(await gate.client.get("/v1/nodes", headers={"Authorization": "Basic abc"}), 401, "Authorization")
    assert_json_error(await gate.client.post("/v1/messages", json={"type": "CHAT"}), 401, "Authorization")
    assert (await gate.client.get("/v1/health")).json()["connections"] == {"up": 2, "total": 2}
    assert (await gate.client.get("/openapi.json")).status_code == 200


async def test_each_token_reads_with_its_identitys_server_permissions(gate: Gate):
    refused = assert_json_error(await gate.client.get("/v1/messages", params={"kind": "chat"}, headers=_as(N1)), 403, None)
    assert "NXS_CHAT" in refused["subject"] + refused["error"]
    sse = await gate.client.get("/v1/stream", params={"kind": "chat"}, headers=_as(N1))
    assert_json_error(sse, 403, None)  # refused before the stream opens
    assert (await gate.client.get("/v1/messages", params={"kind": "chat"}, headers=_as(ADMIN))).status_code == 200
    assert (await gate.client.get("/v1/messages", params={"kind": "heartbeat"}, headers=_as(N1))).status_code == 200


async def test_a_browser_stream_may_carry_its_token_in_the_query_and_nothing_else_may(gate: Gate):
    """EventSource cannot send headers: /v1/stream takes ?access_token=; other paths ignore it (401)."""
    async with gate.client.stream("GET", "/v1/stream", params={"kind": "heartbeat", "access_token": N1}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    refused = await gate.client.get("/v1/stream", params={"kind": "heartbeat", "access_token": "wrong-token-123456"})
    assert_json_error(refused, 401, "Authorization")
    assert_json_error(await gate.client.get("/v1/nodes", params={"access_token": N1}), 401, "Authorization")


async def test_a_caller_sends_only_as_its_identity_and_its_messages_are_signed(gate: Gate, cluster: SecureCluster):
    forged = new_envelope("CHAT", "I am n2", source=Source("n2", "main", ""), to="n3")
    r = await gate.client.post("/v1/messages", content=encode(forged), headers=_as(N1))
    assert_json_error(r, 403, "source.instance_id")
    r = await gate.client.post("/v1/messages", json={"type": "CHAT", "to": "n3", "content": "from n1"}, headers=_as(N1))
    assert r.status_code == 201, r.text
    async with Mesh(cluster.config("admin")) as admin:
        rec = await admin.admin.message(r.json()["stream"], r.json()["seq"])
    assert rec is not None and rec.envelope is not None
    assert rec.envelope.source.instance_id == "n1" and rec.envelope.content == "from n1"
    assert rec.headers.get("Nxs-Signer")  # signed with n1's own key, as a node's publish is


async def test_a_command_goes_through_with_the_callers_identity(gate: Gate, cluster: SecureCluster):
    node = Node(cluster.config("n3"), NodeOptions(heartbeat_interval=0.5, doctor=False, capabilities=("echo",)))
    await node.start()
    try:
        r = await gate.client.post("/v1/nodes/n3/commands/echo", json={"a": 1}, headers=_as(N1))
        assert r.status_code == 200, r.text
        assert r.json()["node"] == "n3" and r.json()["result"] == {"a": 1}
    finally:
        await node.stop()
