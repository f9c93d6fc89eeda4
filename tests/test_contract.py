"""The wire contract is complete enough for another language (issue 10, items 13-15).

The centre piece is ``ForeignNode``: a node written from the shipped schema files and raw nats-py
alone (nothing of nxs_mesh in its code path), which a real ``Node``'s Doctor must track and alert
on, and which answers ``Mesh.request`` correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest

from nxs_mesh.client.dlq import list_dead_letters
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.config import MeshConfig
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire import ids
from nxs_mesh.wire.content import HeartbeatPayload, validate_content
from nxs_mesh.wire.envelope import Source, decode, encode, new_envelope
from nxs_mesh.wire.errors import EnvelopeError, RemoteError
from nxs_mesh.wire.schema import SCHEMA_NAMES, schema_dir, schema_text

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "nxs_mesh" / "wire" / "schemas"  # read as files: what another language gets
SRC = Source("nxs-node-001", "main")


# -- the schema files --------------------------------------------------------------------------------
def test_shipped_schemas_equal_what_the_structs_generate():
    shipped = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))
    assert shipped == sorted(f"{n}.schema.json" for n in SCHEMA_NAMES)
    for name in SCHEMA_NAMES:
        text = (SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8")
        assert text == schema_text(name), f"{name}.schema.json drifted: run python -m nxs_mesh.wire.schema"
    assert schema_dir().resolve() == SCHEMAS.resolve()


def test_schemas_are_package_data_and_linked_from_the_readme():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["nxs_mesh"]
    for path in SCHEMAS.glob("*.schema.json"):
        rel = path.relative_to(ROOT / "nxs_mesh").as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not shipped"
    readme = (ROOT / "README.md").read_text()
    contract = readme.split("## Wire contract", 1)[1].split("\n## ", 1)[0]
    for name in SCHEMA_NAMES:
        assert f"nxs_mesh/wire/schemas/{name}.schema.json" in contract


def test_derived_ids_in_the_schemas_are_the_code_and_the_old_names_still_work():
    from nxs_mesh.node.doctor import alert_id
    from nxs_mesh.node.tasks import result_id

    assert alert_id is ids.alert_id and result_id is ids.result_id
    rule = json.loads((SCHEMAS / "alert.schema.json").read_text())["x-nxs-message-id"]
    name = rule["name"].format(event="dead", node="n1", epoch="e1", seq=9)
    assert str(uuid.uuid5(uuid.UUID(rule["namespace"]), name)) == ids.alert_id("dead", "n1", "e1", 9)
    rule = json.loads((SCHEMAS / "result.schema.json").read_text())["x-nxs-message-id"]
    req = str(uuid.uuid4())
    assert str(uuid.uuid5(uuid.UUID(rule["namespace"]), rule["name"].format(request_id=req))) == ids.result_id(req)


# -- content validation on decode ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "content", "extra", "field"),
    [
        ("HEARTBEAT", {"seq": 1}, {}, "payload.content.epoch"),
        ("HEARTBEAT", {"epoch": "e", "seq": "1"}, {}, "payload.content.seq"),
        ("HEARTBEAT", {"epoch": "e", "seq": -1}, {}, "payload.content.seq"),
        ("HEARTBEAT", "alive", {}, "payload.content"),
        ("STATUS", {"epoch": "e"}, {}, "payload.content.state"),
        ("STATUS", {"epoch": "e", "state": "running", "load": "high"}, {}, "payload.content.load"),
        ("ALERT", {"event": "dead", "node": "bad node", "epoch": "e", "seq": 1}, {}, "payload.content.node"),
        ("COMMAND", {"args": 1}, {}, "payload.content.command"),
        ("COMMAND", "ping", {}, "payload.content"),
        ("RESULT", 1, {"metadata": {"ok": "yes"}, "correlation_id": "c"}, "payload.metadata.ok"),
        ("RESULT", 1, {}, "correlation_id"),
        ("TASK", 1, {"metadata": {}}, "payload.metadata.capability"),
    ],
)
def test_typed_content_is_checked_on_decode_naming_the_field(kind, content, extra, field):
    env = new_envelope(kind, content, source=SRC, **extra)
    with pytest.raises(EnvelopeError) as exc:
        decode(encode(env))
    assert exc.value.field == field, str(exc.value)
    assert f"{kind.lower()}.schema.json" in str(exc.value) or field == "correlation_id"
    decode(encode(env), strict_content=False)  # tools that show raw records can still read it


def test_free_form_types_stay_free_and_typed_ones_come_back_typed():
    for kind in ("CHAT", "SYNC"):
        for content in ("text", 5, None, [1], {"any": "thing"}):
            env = new_envelope(kind, content, source=SRC)
            assert decode(encode(env)).content == content
            assert validate_content(env) == env.payload
    hb = new_envelope("HEARTBEAT", {"epoch": "e1", "seq": 4, "future": True}, source=SRC)
    typed = validate_content(hb)
    assert isinstance(typed, HeartbeatPayload) and typed.content.seq == 4 and typed.content.state == "running"
    assert decode(encode(hb)).content == {"epoch": "e1", "seq": 4, "future": True}  # unknown fields kept


# -- against a real server ----------------------------------------------------------------------------
async def test_consumer_dead_letters_bad_content_with_the_field_in_the_reason(mesh: Mesh):
    handled: list[Any] = []

    async def handler(env):
        handled.append(env.content)

    await mesh.consume("command", handler)
    bad = new_envelope("COMMAND", {"command": 5}, source=SRC, to=mesh.config.instance_id)
    await mesh.link.js.publish(f"nxs.command.{mesh.config.instance_id}._all.p1", encode(bad),
                          headers={"Nats-Msg-Id": bad.id})
    await mesh.publish("COMMAND", {"command": "fine"}, to=mesh.config.instance_id)

    async def letters():
        return [d async for d in list_dead_letters(mesh)]

    dead = await eventually(letters, what="a dead letter")
    assert "payload.content.command" in dead[0].reason and "Expected `str`" in dead[0].reason
    await eventually(lambda: handled == [{"command": "fine"}], what="the good one handled")


async def test_a_foreign_publish_with_nats_ttl_to_chat_is_stored_and_expires(mesh: Mesh):
    subject = f"nxs.chat.{unique_id('n')}.main"
    env = new_envelope("CHAT", "ephemeral", source=SRC)
    ack = await mesh.link.js.publish(subject, encode(env), headers={"Nats-Msg-Id": env.id, "Nats-TTL": "1s"})
    assert ack.seq >= 1 and ack.stream == "NXS_CHAT"

    async def gone():
        return await mesh.last("chat", subject) is None

    await eventually(gone, timeout=15, interval=0.2, what="the server drops it at its Nats-TTL")


async def test_publish_of_non_utf8_content_is_an_envelope_error_and_stores_nothing(mesh: Mesh):
    with pytest.raises(EnvelopeError) as exc:
        await mesh.publish("CHAT", os.fsdecode(b"caf\xe9"), to="n2")
    assert exc.value.field == "payload.content"
    assert (await mesh.link.js.stream_info("NXS_CHAT")).state.messages == 0


# -- a node written from the contract alone ----------------------------------------------------------
def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


def _js_time() -> str:
    """Like JavaScript's Date.toISOString(): milliseconds and Z."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class ForeignNode:
    """What a developer in another language writes from the schemas: raw NATS, JSON, UUIDs. It also
    writes nulls for unset fields, as many serialisers do."""

    def __init__(self, url: str, node_id: str) -> None:
        self.url, self.id = url, node_id
        self.epoch = uuid.uuid4().hex[:12]
        self.seq = 0
        self.answered: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat = _schema("heartbeat")
        self._result_rule = _schema("result")["x-nxs-message-id"]

    def envelope(self, kind: str, content: Any, *, metadata: Any = None, to: dict[str, Any] | None = None,
                 **extra: Any) -> bytes:
        doc = {"message_id": extra.pop("message_id", str(uuid.uuid4())), "timestamp": _js_time(),
               "source": {"instance_id": self.id, "agent_id": "main", "location": None},
               "target": to or {"instance_id": "*", "agent_id": "*", "broadcast": True},
               "message_type": kind, "payload": {"content": content, "metadata": metadata},
               "priority": None, "ttl": 0, "correlation_id": None, "reply_to": None, **extra}
        return json.dumps(doc).encode()

    async def start(self) -> ForeignNode:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        status = {"state": "running", "epoch": self.epoch, "version": "foreign-0.1", "agents": ["main"]}
        await self.js.publish(f"nxs.status.{self.id}", self.envelope("STATUS", status),
                              headers={"Nats-Msg-Id": str(uuid.uuid4())})
        self.commands = await self.js.pull_subscribe(f"nxs.command.{self.id}.>", durable=f"cmd-{self.id}",
                                                     stream="NXS_COMMAND")
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._serve())]
        return self

    def heartbeat(self) -> dict[str, Any]:
        self.seq += 1
        content = {"epoch": self.epoch, "seq": self.seq, "state": "running", "inflight": None}
        missing = set(self._heartbeat["$defs"]["Heartbeat"]["required"]) - set(content)
        assert not missing, f"the schema requires {missing}"
        return content

    async def _beat(self) -> None:
        subject = self._heartbeat["x-nxs-subject"].replace("<from_instance>", self.id)
        while True:
            await self.nc.publish(subject, self.envelope("HEARTBEAT", self.heartbeat()))
            await asyncio.sleep(0.2)  # sleep-ok: the foreign node's heartbeat timer

    async def _serve(self) -> None:
        while True:
            try:
                msgs = await self.commands.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await self._answer(json.loads(msg.data))
                await msg.ack()

    async def _answer(self, req: dict[str, Any]) -> None:
        if not req.get("reply_to"):
            return  # no reply wanted
        command = req["payload"]["content"]
        ok = command["command"] == "echo"
        metadata = {"ok": ok, "error": None if ok else f"unknown command {command['command']!r}"}
        name = self._result_rule["name"].format(request_id=req["message_id"])
        result_id = str(uuid.uuid5(uuid.UUID(self._result_rule["namespace"]), name))
        data = self.envelope("RESULT", command.get("args") if ok else None, metadata=metadata,
                             to={**req["source"], "broadcast": False}, message_id=result_id,
                             correlation_id=req["correlation_id"])
        self.answered.append(req["message_id"])  # before: the caller may have the answer first
        await self.js.publish(req["reply_to"], data, headers={"Nats-Msg-Id": result_id})

    async def silence(self) -> None:
        """Stop heartbeating (a hung process): the Doctor must call it dead."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        await self.silence()
        await self.nc.close()


async def test_a_node_written_from_the_schemas_alone_is_tracked_alerted_and_answers(
    nats_server: NatsServer, tmp_path: Path
):
    cfg = MeshConfig(servers=(nats_server.url,), instance_id=unique_id("real"), data_dir=str(tmp_path / "d"))
    node = await Node(cfg, NodeOptions(heartbeat_interval=0.2, dead_after=1.0)).start()
    foreign = await ForeignNode(nats_server.url, unique_id("foreign")).start()
    try:
        async with Mesh(cfg.replace(instance_id=unique_id("caller"))) as mesh:
            assert node.doctor is not None
            peer = await eventually(lambda: node.doctor.peers.get(foreign.id), what="the doctor hears it")
            assert peer.epoch == foreign.epoch and peer.state == "alive" and peer.reported == "running"
            status = await mesh.last("status", f"nxs.status.{foreign.id}")
            assert status is not None and status.error is None and status.envelope.content["state"] == "running"

            reply = await mesh.request(foreign.id, "echo", {"x": [1, 2]}, timeout=10)
            assert reply.content == {"x": [1, 2]} and reply.source.instance_id == foreign.id
            assert reply.id == ids.result_id(foreign.answered[0])  # the derivation, from the schema alone
            with pytest.raises(RemoteError, match="unknown command 'nope'"):
                await mesh.request(foreign.id, "nope", None, timeout=10)

            await foreign.silence()

            async def alerted():
                rec = await mesh.last("alert", f"nxs.alert.{foreign.id}")
                return rec if rec is not None and rec.envelope is not None else None

            try:
                alert = (await eventually(alerted, timeout=15, interval=0.1, what="a death alert")).envelope
            except AssertionError as exc:  # seen only in some full runs: say what the server was doing
                raise AssertionError(f"{exc}\n{await asyncio.to_thread(_server_report, nats_server)}") from None
            assert alert.content["event"] == "dead" and alert.content["node"] == foreign.id
            rule = _schema("alert")["x-nxs-message-id"]
            name = rule["name"].format(event="dead", node=foreign.id, epoch=foreign.epoch, seq=foreign.seq)
            assert alert.id == str(uuid.uuid5(uuid.UUID(rule["namespace"]), name))
            assert node.doctor.peers[foreign.id].state == "dead"
    finally:
        await foreign.close()
        await node.stop()


def _server_report(srv: NatsServer) -> str:
    """The server's process state (R running, S sleeping, T stopped), its monitor's view and its log tail."""
    import urllib.request

    lines = []
    try:
        lines.append("process state: " + Path(f"/proc/{srv.pid}/stat").read_text().split(") ")[1].split()[0])
    except (OSError, IndexError) as exc:
        lines.append(f"process state: unknown ({exc})")
    for page in ("varz", "jsz", "connz?subs=1"):
        try:
            with urllib.request.urlopen(f"{srv.monitor_url}/{page}", timeout=2) as resp:
                lines.append(f"/{page}: {resp.read(3000).decode(errors='replace')}")
        except OSError as exc:
            lines.append(f"/{page}: {exc}")
    return "\n".join([*lines, "server log tail:", *list(srv.log)[-30:]])


def test_the_foreign_node_uses_nothing_of_nxs_mesh():
    """Keeps the test above honest: ForeignNode's code path names nothing of the library."""
    import inspect

    source = inspect.getsource(ForeignNode) + inspect.getsource(_schema) + inspect.getsource(_js_time)
    assert "nxs_mesh" not in source and "msgspec" not in source


def test_content_ids_refuse_a_trailing_newline_and_the_schema_pattern_is_ecma():
    alert = new_envelope("ALERT", {"event": "dead", "node": "n1\n", "epoch": "e", "seq": 1}, source=SRC)
    with pytest.raises(EnvelopeError) as exc:
        decode(encode(alert))
    assert exc.value.field == "payload.content.node"
    node = _schema("alert")["$defs"]["Alert"]["properties"]["node"]
    assert node["pattern"] == "^[A-Za-z0-9_:-]{1,64}$"
