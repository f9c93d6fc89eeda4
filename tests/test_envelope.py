"""Envelope codec and validation (DESIGN.md section 3, the public wire contract)."""

import json
import uuid

import msgspec
import pytest

from nxs_mesh.wire.envelope import (
    MESSAGE_TYPES,
    Envelope,
    Source,
    check_id,
    decode,
    encode,
    new_envelope,
)
from nxs_mesh.wire.errors import EnvelopeError, UnknownMessageType

SRC = Source("nxs-node-001", "agent:main:main", "vps-singapore")


def wire(**changes):
    env = new_envelope("CHAT", "hello", source=SRC, to="nxs-node-002")
    doc = json.loads(encode(env))
    doc.update(changes)
    return doc


def test_roundtrip_json_and_msgpack():
    env = new_envelope("COMMAND", {"command": "ping", "args": [1]}, source=SRC, to="nxs-node-002",
                       priority=7, ttl=30, metadata={"k": [1, 2]}, correlation_id="c-1")
    assert decode(encode(env)) == env
    assert decode(encode(env, msgpack=True), msgpack=True) == env


def test_wire_field_names_are_the_contract():
    doc = json.loads(encode(new_envelope("CHAT", "hi", source=SRC, to="nxs-node-002")))
    assert set(doc) == {"message_id", "timestamp", "source", "target", "message_type", "payload",
                        "priority", "ttl", "v"}
    assert set(doc["source"]) == {"instance_id", "agent_id", "location"}
    assert set(doc["target"]) == {"instance_id", "agent_id", "broadcast"}
    assert set(doc["payload"]) == {"content", "metadata"}
    assert doc["priority"] == 1 and doc["ttl"] == 300
    assert doc["timestamp"].endswith("Z")  # RFC 3339 UTC
    uuid.UUID(doc["message_id"])


def test_unknown_fields_are_tolerated():
    doc = wire(future_field={"x": 1})
    assert decode(json.dumps(doc).encode()).content == "hello"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"priority": 12}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"ttl": -1}, "ttl"),
        ({"message_id": "not-a-uuid"}, "message_id"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": "2026-01-01T00:00:00"}, "timestamp"),  # no zone: not RFC 3339
        ({"source": {"instance_id": "bad id!", "agent_id": "a"}}, "source.instance_id"),
        ({"target": {"instance_id": "x" * 65, "agent_id": "*", "broadcast": False}}, "target.instance_id"),
        ({"payload": "just a string"}, "payload"),
    ],
)
def test_invalid_fields_are_named(changes, field):
    with pytest.raises(EnvelopeError) as exc:
        decode(json.dumps(wire(**changes)).encode())
    assert exc.value.field == field
    assert field in str(exc.value)


def test_missing_field_is_named():
    doc = wire()
    del doc["source"]
    with pytest.raises(EnvelopeError, match="source"):
        decode(json.dumps(doc).encode())


def test_unknown_type_is_rejected_clearly():
    with pytest.raises(UnknownMessageType) as exc:
        decode(json.dumps(wire(message_type="GOSSIP")).encode())
    assert exc.value.field == "message_type"
    assert "CHAT" in str(exc.value)  # lists what is known


def test_garbage_and_oversize():
    with pytest.raises(EnvelopeError, match="not valid JSON"):
        decode(b"\x00\xffgarbage")
    with pytest.raises(EnvelopeError, match="limit"):
        decode(b" " * (1024 * 1024 + 1))


@pytest.mark.parametrize("good", ["agent:main:main", "nxs-node-001", "A_b-9", "x" * 64])
def test_valid_ids(good):
    assert check_id(good, "f") == good


@pytest.mark.parametrize("bad", ["", "has space", "dot.ted", "x" * 65, "star*", "_all", "é", None, 5])
def test_invalid_ids_rejected_never_escaped(bad):
    with pytest.raises(EnvelopeError) as exc:
        check_id(bad, "target.instance_id")
    assert exc.value.field == "target.instance_id"


def test_new_envelope_validates_what_structs_do_not():
    with pytest.raises(EnvelopeError, match="priority"):
        new_envelope("CHAT", "x", source=SRC, priority=10)
    with pytest.raises(EnvelopeError, match="ttl"):
        new_envelope("CHAT", "x", source=SRC, ttl=-5)
    with pytest.raises(UnknownMessageType):
        new_envelope("NOPE", "x", source=SRC)
    with pytest.raises(EnvelopeError, match="message_id"):
        new_envelope("CHAT", "x", source=SRC, message_id="123")
    with pytest.raises(EnvelopeError, match="target.agent_id"):
        new_envelope("CHAT", "x", source=SRC, agent="a b")


def test_types_case_insensitive_on_the_edge_and_all_known():
    assert new_envelope("chat", "x", source=SRC).message_type == "CHAT"
    assert {"CHAT", "COMMAND", "STATUS", "HEARTBEAT", "SYNC"} <= set(MESSAGE_TYPES)


def test_broadcast_and_expiry():
    env = new_envelope("CHAT", "x", source=SRC)
    assert env.target.is_broadcast and env.target.instance_id == "*"
    assert not env.is_expired()
    never = new_envelope("CHAT", "x", source=SRC, ttl=0)
    assert never.expires_at() is None and not never.is_expired()
    old = msgspec.structs.replace(env, timestamp=env.timestamp.replace(year=2000))
    assert old.is_expired()


def test_decoded_type_is_envelope():
    assert isinstance(decode(encode(new_envelope("SYNC", {"a": 1}, source=SRC))), Envelope)
