"""The HTTP gateway against a real nats-server, over real HTTP (uvicorn on a free port, httpx): publish
in both forms, idempotency, bounded replay, the OpenAPI document, CORS, size limits, and JSON errors
for garbage sent to every endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gateway_support import Gate, assert_json_error, running_gateway
from test_gateway_openapi import A2A_OPS

from nxs_mesh import ConfigError, Mesh, MeshConfig
from nxs_mesh.gateway import API_ROUTES, TokenTable
from nxs_mesh.gateway.openapi import a2a_installed
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.wire.envelope import Source, encode, new_envelope

pytestmark = pytest.mark.timeout(60)
ORIGIN = "https://console.example"


@pytest.fixture
async def gate(mesh: Mesh, mesh_config: MeshConfig) -> AsyncIterator[Gate]:
    async with running_gateway(mesh_config.replace(instance_id="gw"), max_body=64 * 1024, max_file=1024,
                               cors=(ORIGIN,)) as g:
        yield g


async def _stored(mesh: Mesh, seq: int):
    return [r async for r in mesh.tail("chat", seq=seq, last=None)][0]


async def test_short_form_is_published_from_the_gateways_identity(gate: Gate, mesh: Mesh):
    r = await gate.client.post("/v1/messages", json={"type": "chat", "to": "n2", "content": {"hello": 1},
                                                     "priority": 7, "metadata": {"k": "v"}})
    assert r.status_code == 201, r.text
    ack = r.json()
    assert ack["stream"] == "NXS_CHAT" and isinstance(ack["seq"], int) and ack["duplicate"] is False
    rec = await _stored(mesh, ack["seq"])
    env = rec.envelope
    assert rec.subject == "nxs.chat.n2._all" and env.id == ack["message_id"]
    assert (env.source.instance_id, env.content, env.priority, env.payload.metadata) == ("gw", {"hello": 1}, 7, {"k": "v"})


async def test_a_full_contract_envelope_is_stored_as_sent(gate: Gate, mesh: Mesh):
    env = new_envelope("COMMAND", {"command": "echo", "args": 1}, source=Source("someone", "main", "lab"),
                       to="n3", priority=2)
    r = await gate.client.post("/v1/messages", content=encode(env), headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["stream"] == "NXS_COMMAND"
    rec = await mesh.admin.message("NXS_COMMAND", r.json()["seq"])
    assert rec.envelope == env  # without tokens the gateway relays a full envelope unchanged


async def test_idempotency_key_maps_to_message_id_and_a_repeat_is_a_duplicate(gate: Gate, mesh: Mesh):
    body = {"type": "CHAT", "to": "n2", "content": "once"}
    key = unique_id("order")
    first = await gate.client.post("/v1/messages", json=body, headers={"Idempotency-Key": key})
    again = await gate.client.post("/v1/messages", json={**body, "content": "twice?"}, headers={"Idempotency-Key": key})
    other = await gate.client.post("/v1/messages", json=body, headers={"Idempotency-Key": unique_id("order")})
    assert first.status_code == 201 and again.status_code == 200, (first.text, again.text)
    assert again.json() == {**first.json(), "duplicate": True}
    assert other.json()["seq"] > first.json()["seq"] and other.json()["message_id"] != first.json()["message_id"]
    contents = [r.envelope.content async for r in mesh.tail("chat", seq=first.json()["seq"])]
    assert contents == ["once", "once"]  # the repeat was not stored; the other key was
    as_uuid = str(uuid.uuid4())  # a UUID key is the message id itself
    r = await gate.client.post("/v1/messages", json=body, headers={"Idempotency-Key": as_uuid})
    assert r.json()["message_id"] == as_uuid


async def test_replay_by_sequence_time_and_last_is_bounded_by_limit(gate: Gate, mesh: Mesh):
    to = unique_id("n")
    before = datetime.now(UTC)
    seqs = [(await mesh.publish("CHAT", i, to=to)).seq for i in range(5)]
    q = {"kind": "chat", "instance": to}
    r = await gate.client.get("/v1/messages", params={**q, "since": seqs[2]})
    assert [m["envelope"]["payload"]["content"] for m in r.json()["messages"]] == [2, 3, 4]
    assert r.json()["more"] is False and r.json()["next"] == seqs[4] + 1
    page = (await gate.client.get("/v1/messages", params={**q, "limit": 2})).json()
    assert [m["seq"] for m in page["messages"]] == seqs[:2] and page["more"] is True and page["next"] == seqs[1] + 1
    page2 = (await gate.client.get("/v1/messages", params={**q, "since": page["next"], "limit": 2})).json()
    assert [m["seq"] for m in page2["messages"]] == seqs[2:4]
    by_time = (await gate.client.get("/v1/messages", params={**q, "since": before.isoformat()})).json()
    assert [m["seq"] for m in by_time["messages"]] == seqs
    last = (await gate.client.get("/v1/messages", params={**q, "last": 2})).json()
    assert [m["seq"] for m in last["messages"]] == seqs[3:]
    first = last["messages"][0]
    assert first["subject"] == f"nxs.chat.{to}._all" and first["error"] is None and first["stored_at"]


GARBAGE = [
    # (method, path, body or None, headers, status, field)
    ("POST", "/v1/messages", b"{not json", {}, 400, "body"),
    ("POST", "/v1/messages", b"[1, 2]", {}, 400, "body"),
    ("POST", "/v1/messages", b"\xff\xfe\x00garbage", {}, 400, "body"),
    ("POST", "/v1/messages", b'{"type": "CHAT", "ttl": -5}', {}, 400, "ttl"),
    ("POST", "/v1/messages", b'{"type": "CHAT", "metadata": [1]}', {}, 400, "metadata"),
    ("POST", "/v1/messages", b'{"to": "n2"}', {}, 400, "type"),  # the short form needs a type
    ("POST", "/v1/messages", b'{"type": "CHAT", "bogus": 1}', {}, 400, "bogus"),
    ("POST", "/v1/messages", b'{"type": "CHAT", "priority": "high"}', {}, 400, "priority"),
    ("POST", "/v1/messages", b'{"type": "CHAT", "priority": 42}', {}, 400, "priority"),
    ("POST", "/v1/messages", b'{"type": "GOSSIP"}', {}, 400, "message_type"),
    ("POST", "/v1/messages", b'{"type": "CHAT", "to": "no spaces"}', {}, 400, "target.instance_id"),
    ("POST", "/v1/messages", b'{"message_type": "CHAT", "payload": 3}', {}, 400, ...),
    ("POST", "/v1/messages", b'{"type": "CHAT"}', {"Idempotency-Key": "k" * 300}, 400, "Idempotency-Key"),
    ("POST", "/v1/messages", b'{"type": "CHAT", "content": "' + b"x" * 70_000 + b'"}', {}, 413, "body"),
    ("GET", "/v1/messages?kind=gossip", None, {}, 400, "kind"),
    ("GET", "/v1/messages?since=yesterday-ish", None, {}, 400, "since"),
    ("GET", "/v1/messages?limit=lots", None, {}, 400, "limit"),
    ("GET", "/v1/messages?instance=a.b", None, {}, 400, "instance"),
    ("GET", "/v1/messages?agent=*.>", None, {}, 400, "agent"),
    ("GET", "/v1/messages?limit=100000", None, {}, 400, "limit"),
    ("GET", "/v1/messages?since=5&last=2", None, {}, 400, "last"),
    ("GET", "/v1/stream?kind=gossip", None, {}, 400, "kind"),
    ("GET", "/v1/stream", None, {"Last-Event-ID": "abc"}, 400, "Last-Event-ID"),
    ("POST", "/v1/nodes/bad node/commands/ping", None, {}, 400, "node"),
    ("POST", "/v1/nodes/n1/commands/ping?timeout=-1", None, {}, 400, "timeout"),
    ("POST", "/v1/nodes/n1/commands/ping?priority=11", None, {}, 400, "priority"),
    ("POST", "/v1/nodes/n1/commands/ping", b"{oops", {}, 400, "body"),
    ("POST", "/v1/tasks", b"{}", {}, 400, "capability"),
    ("POST", "/v1/tasks", b'{"capability": "bad cap"}', {}, 400, "capability"),
    ("POST", "/v1/tasks", b'{"capability": "echo", "wait": "maybe"}', {}, 400, "wait"),
    ("POST", "/v1/tasks", b"", {}, 400, "body"),
    ("POST", "/v1/tasks", b'{"capability": "echo", "priority": 99}', {}, 400, "priority"),
    ("POST", "/v1/tasks", b'{"capability": "echo", "wait": true, "timeout": 0}', {}, 400, "timeout"),
    ("GET", "/v1/tasks/not-a-uuid", None, {}, 400, "task_id"),
    ("GET", "/v1/alerts?node=a.b", None, {}, 400, "node"),
    ("GET", "/v1/alerts?limit=0", None, {}, 400, "limit"),
    ("GET", "/v1/files/nope.bin", None, {}, 404, None),
    ("PUT", "/v1/files/big.bin", b"x" * 2048, {}, 413, "body"),
    ("PUT", "/v1/files/", b"x", {}, 400, None),
    ("PUT", "/v1/files/x.bin?to=not valid", b"x", {}, 400, "to"),
    ("DELETE", "/v1/files/nope.bin", None, {}, 404, None),
    ("GET", "/v1/nowhere", None, {}, 404, None),
    ("DELETE", "/v1/messages", None, {}, 405, None),
]


@pytest.mark.parametrize("method,path,body,headers,status,field", GARBAGE,
                         ids=[f"{m} {p[:40]} {s}" for m, p, _, _, s, _ in GARBAGE])
async def test_garbage_gets_a_json_error_never_a_trace(gate: Gate, method, path, body, headers, status, field):
    r = await gate.client.request(method, path, content=body, headers=headers)
    assert_json_error(r, status, field)


async def test_a_request_the_http_parser_refuses_is_400_without_a_trace(gate: Gate):
    """A control character in a header never reaches the app: uvicorn's parser (httptools) answers 400
    itself, as plain text; nothing else is said."""
    r = await gate.client.post("/v1/messages", json={"type": "CHAT"}, headers={"Idempotency-Key": "\x01"})
    assert r.status_code == 400 and "Traceback" not in r.text and 'File "' not in r.text, r.text


async def test_a_declared_length_over_the_limit_is_refused_before_reading(gate: Gate):
    """A client announcing 1 GB gets its 413 at once: the gateway answers before reading any of it."""
    reader, writer = await asyncio.open_connection(gate.server.host, gate.server.port)
    try:
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\n\r\n{")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413 "), head
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1])
        body = json.loads(await reader.readexactly(length))
        assert body["field"] == "body" and "1000000000" in body["error"]
    finally:
        writer.close()


def _route_ops() -> set[tuple[str, str]]:
    api = {(r.path.replace(":path}", "}"), m.lower()) for r in API_ROUTES for m in (r.methods or ()) if m != "HEAD"}
    return api | (A2A_OPS if a2a_installed() else set())  # the /a2a mount: tests/test_gateway_openapi.py


async def test_openapi_document_lists_exactly_the_routes(gate: Gate):
    doc = (await gate.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert documented == _route_ops()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["responses"], (path, method)
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, (path, method)
            for ref in _refs(op):
                assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref


def _refs(value) -> list[str]:
    if isinstance(value, dict):
        return [value["$ref"]] if "$ref" in value else [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


async def test_cors_allows_only_the_configured_origins(gate: Gate):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,idempotency-key"}
    ok = await gate.client.options("/v1/messages", headers={"Origin": ORIGIN, **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    assert "idempotency-key" in ok.headers["access-control-allow-headers"].lower()
    other = await gate.client.options("/v1/messages", headers={"Origin": "https://evil.example", **pre})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    simple = await gate.client.get("/v1/health", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN


async def test_every_connection_gets_tcp_nodelay(gate: Gate):
    """The listening socket says IPPROTO_TCP, the condition under which asyncio sets TCP_NODELAY on each
    accepted connection (a socket made with proto 0 left keep-alive requests waiting ~40 ms on Nagle)."""
    [listener] = gate.server._server.servers[0].sockets
    assert listener.proto == socket.IPPROTO_TCP


async def test_reprs_show_state(gate: Gate):
    assert repr(gate.gateway) == "<Gateway OPEN [open, no tokens, 0 feeds]>"
    assert repr(gate.server) == f"<GatewayServer {gate.server.url} listening <Gateway OPEN [open, no tokens, 0 feeds]>>"


async def test_health_says_the_connection_is_up_and_deep_runs_the_mesh_check(gate: Gate):
    r = await gate.client.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["connections"] == {"up": 1, "total": 1}
    deep = (await gate.client.get("/v1/health", params={"deep": 1})).json()
    assert {c["name"] for c in deep["mesh"]["checks"]} >= {"server", "jetstream", "streams"}


async def test_the_console_directory_is_served_at_the_root(mesh: Mesh, mesh_config: MeshConfig, tmp_path: Path):
    (tmp_path / "index.html").write_text("<h1>nxs console</h1>")
    async with running_gateway(mesh_config.replace(instance_id="gw"), console=str(tmp_path)) as g:
        page = await g.client.get("/")
        assert page.status_code == 200 and "nxs console" in page.text
        assert (await g.client.get("/v1/health")).json()["status"] == "ok"  # the API still wins its paths


async def test_a_lost_server_is_503_at_once_not_a_publish_timeout(mesh_config: MeshConfig, nats_server):
    async with running_gateway(mesh_config.replace(instance_id="gw")) as g:
        nats_server.stop()

        async def down() -> bool:
            return (await g.client.get("/v1/health")).status_code == 503

        await eventually(down, timeout=15, what="health to say the connection is down")
        assert_json_error(await g.client.post("/v1/messages", json={"type": "CHAT", "content": "x"}), 503, None)
        assert_json_error(await g.client.get("/v1/messages"), 503, None)


async def test_tokens_map_to_identities_by_token_or_its_digest(mesh: Mesh, mesh_config: MeshConfig, tmp_path: Path):
    """In an open mesh a token's identity is the gateway's config under that name (and agent): what it
    sends carries that source. A token may be given as its SHA-256 only."""
    plain, hashed = "plain-token-0123456789", "hashed-token-0123456789"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\ntoken = "{plain}"\nidentity = "planner-node"\nagent = "planner"\n\n'
                      f'[[token]]\nsha256 = "{hashlib.sha256(hashed.encode()).hexdigest()}"\nidentity = "n7"\n')
    table = TokenTable.load(tokens, mesh_config)
    assert repr(table) == "<TokenTable [2 tokens, 2 identities]>"
    async with running_gateway(mesh_config.replace(instance_id="gw"), tokens=table) as g:
        sources = []
        for token in (plain, hashed):
            r = await g.client.post("/v1/messages", json={"type": "CHAT", "to": "n2", "content": token},
                                    headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 201, r.text
            env = (await _stored(mesh, r.json()["seq"])).envelope
            sources.append((env.source.instance_id, env.source.agent_id))
        assert sources == [("planner-node", "planner"), ("n7", "main")]
        assert_json_error(await g.client.get("/v1/nodes", headers={"Authorization": f"Bearer {hashed}x"}), 401,
                          "Authorization")


@pytest.mark.parametrize("text,message", [
    ('[[token]]\ntoken = "0123456789abcdef0"\nidentity = "n1"\nrole = "x"\n', "unknown keys"),
    ('[[token]]\nsha256 = "abc"\nidentity = "n1"\n', "64 hex digits"),
    ('[[token]]\ntoken = "0123456789abcdef0"\nsha256 = "ab"\nidentity = "n1"\n', "exactly one"),
    ('[[token]]\ntoken = "0123456789abcdef0"\nidentity = "not valid"\n', "identity"),
    ('[[token]]\ntoken = "0123456789abcdef0"\nidentity = "n1"\nconfig = "nowhere.toml"\n', "does not exist"),
    ('[[token]]\ntoken = "0123456789abcdef0"\nidentity = "n1"\n[[token]]\ntoken = "0123456789abcdef1"\n'
     'identity = "n1"\nagent = "other"\n', "configured twice"),
    ("title = 'no tokens'\n", "no [[token]]"),
])
def test_a_bad_tokens_file_is_a_config_error_naming_the_entry(tmp_path: Path, text: str, message: str):
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        TokenTable.load(path, MeshConfig(instance_id="gw"))
