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


# -- issue 10 item 13: null in an optional field is absent ------------------------------------------
def test_nulls_in_optional_fields_mean_absent():
    doc = wire(correlation_id=None, reply_to=None, priority=None, ttl=None, v=None,
               payload={"content": None, "metadata": None},
               source={"instance_id": "nxs-node-001", "agent_id": "a", "location": None},
               target={"instance_id": "nxs-node-002", "agent_id": None, "broadcast": None})
    for data, mp in ((json.dumps(doc).encode(), False), (msgspec.msgpack.encode(doc), True)):
        env = decode(data, msgpack=mp)
        assert env.correlation_id is msgspec.UNSET and env.reply_to is msgspec.UNSET
        assert env.priority == 1 and env.ttl == 300 and env.v == 1
        assert env.payload.metadata == {} and env.source.location == ""
        assert env.target.agent_id == "*" and env.target.broadcast is False
        assert env.content is None  # content takes null as a value: a handler may return None
        assert json.loads(encode(env))["payload"]["metadata"] == {}  # and we never write the nulls back


def test_null_in_a_required_field_is_still_named():
    with pytest.raises(EnvelopeError) as exc:
        decode(json.dumps(wire(message_id=None, reply_to=None)).encode())
    assert exc.value.field == "message_id" and "null" in str(exc.value)


def test_nulls_inside_typed_content_are_absent_too():
    hb = new_envelope("HEARTBEAT", {"epoch": "e1", "seq": 3, "state": None, "inflight": None}, source=SRC)
    env = decode(encode(hb))
    assert env.content == {"epoch": "e1", "seq": 3}  # the Doctor's dict reads see "absent", not None


# -- item 15: timestamps ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stamp", "micro"),
    [
        ("2026-12-03T10:00:00.123Z", 123000),  # JavaScript's Date.toISOString()
        ("2026-12-03T12:00:00.123+02:00", 123000),  # an offset
        ("2026-12-03T10:00:00Z", 0),  # no fraction
        ("2026-12-03T10:00:00.123456789Z", 123457),  # Go's RFC3339Nano
        ("2026-12-03T10:00:00.123+00:00", 123000),  # Python's isoformat()
    ],
)
def test_any_rfc3339_timestamp_is_accepted_and_one_style_is_written(stamp, micro):
    from datetime import UTC, datetime

    from nxs_mesh.wire.envelope import format_time

    env = decode(json.dumps(wire(timestamp=stamp)).encode())
    assert env.timestamp == datetime(2026, 12, 3, 10, 0, 0, micro, tzinfo=UTC)
    written = json.loads(encode(env))["timestamp"]
    assert written == format_time(env.timestamp)
    assert written.startswith("2026-12-03T10:00:00") and written.endswith("Z")


def test_format_time_is_what_the_encoder_writes():
    from datetime import UTC, datetime, timedelta, timezone

    from nxs_mesh.wire.envelope import format_time

    env = new_envelope("CHAT", "x", source=SRC)
    assert json.loads(encode(env))["timestamp"] == format_time(env.timestamp)
    plus2 = datetime(2026, 12, 3, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(plus2) == "2026-12-03T10:00:00.000005Z"
    assert format_time(datetime(2026, 12, 3, 10, 0, tzinfo=UTC)) == "2026-12-03T10:00:00Z"
    with pytest.raises(EnvelopeError, match="timestamp"):
        format_time(datetime(2026, 12, 3))  # naive: no zone


def test_msgpack_carries_the_timestamp_as_the_same_string_and_accepts_both():
    from nxs_mesh.wire.envelope import format_time

    env = new_envelope("CHAT", "x", source=SRC)
    raw = msgspec.msgpack.decode(encode(env, msgpack=True))
    assert raw["timestamp"] == format_time(env.timestamp)  # a str, not a msgpack timestamp extension
    assert decode(encode(env, msgpack=True), msgpack=True) == env
    older = msgspec.msgpack.encode(env)  # what earlier versions wrote: the binary timestamp extension
    assert decode(older, msgpack=True) == env


# -- item 15: reply_to and correlation_id become subject tokens ----------------------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reply_to": "some.other.subject"}, "reply_to"),
        ({"reply_to": "nxs.chat.n1.a"}, "reply_to"),
        ({"reply_to": "nxs.result.a.b"}, "reply_to"),
        ({"reply_to": "_INBOX.abc"}, "reply_to"),
        ({"correlation_id": "req.42"}, "correlation_id"),
        ({"correlation_id": ""}, "correlation_id"),
    ],
)
def test_reply_to_and_correlation_id_are_validated_on_decode(changes, field):
    with pytest.raises(EnvelopeError) as exc:
        decode(json.dumps(wire(**changes)).encode())
    assert exc.value.field == field


def test_reply_to_is_validated_on_the_edge_too():
    with pytest.raises(EnvelopeError) as exc:
        new_envelope("COMMAND", {"command": "ping"}, source=SRC, reply_to="nxs.chat.x.y")
    assert exc.value.field == "reply_to"
    ok = new_envelope("COMMAND", {"command": "ping"}, source=SRC, correlation_id="c-1", reply_to="nxs.result.c-1")
    assert decode(encode(ok)).reply_to == "nxs.result.c-1"


# -- item 6 (library half): content UTF-8 cannot carry --------------------------------------------
@pytest.mark.parametrize("msgpack", [False, True])
def test_non_utf8_content_is_an_envelope_error_naming_the_field(msgpack):
    import os

    bad = os.fsdecode(b"\xff")  # a lone surrogate: what a non-UTF-8 file name or argv becomes
    with pytest.raises(EnvelopeError) as exc:
        encode(new_envelope("CHAT", bad, source=SRC), msgpack=msgpack)
    assert exc.value.field == "payload.content" and "UTF-8" in str(exc.value)
    with pytest.raises(EnvelopeError) as exc:
        encode(new_envelope("CHAT", "ok", source=SRC, metadata={"path": bad}), msgpack=msgpack)
    assert exc.value.field == "payload.metadata.path"
    with pytest.raises(EnvelopeError) as exc:
        encode(new_envelope("CHAT", {"files": ["a", bad]}, source=SRC), msgpack=msgpack)
    assert exc.value.field == "payload.content.files[1]"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"source": {"instance_id": "evil\n", "agent_id": "a"}}, "source.instance_id"),
        ({"target": {"instance_id": "n2", "agent_id": "main\n", "broadcast": False}}, "target.agent_id"),
        ({"correlation_id": "c-1\n"}, "correlation_id"),
        ({"reply_to": "nxs.result.c-1\n"}, "reply_to"),
    ],
)
def test_a_trailing_newline_never_passes_as_an_id(changes, field):
    # Python's `$` matches before a final newline; in a subject token that newline would end the
    # NATS protocol line.
    with pytest.raises(EnvelopeError) as exc:
        decode(json.dumps(wire(**changes)).encode())
    assert exc.value.field == field
    with pytest.raises(EnvelopeError):
        check_id("node-1\n", "instance_id")


def test_decode_json_is_decode_for_json_with_the_same_errors():
    # The consumers' fast entry: the same envelope, the same validation, the same field named.
    from nxs_mesh.wire.envelope import decode_json

    env = new_envelope("COMMAND", {"command": "ping"}, source=SRC, to="nxs-node-002", correlation_id="c-1")
    assert decode_json(encode(env)) == decode(encode(env)) == env
    for changes, field in (({"priority": 10}, "priority"), ({"reply_to": "nxs.chat.x"}, "reply_to"),
                           ({"source": {"instance_id": "a b", "agent_id": "x"}}, "source.instance_id"),
                           ({"message_type": "COMMAND", "payload": {"content": {"args": 1}}}, "payload.content.command")):
        for fn in (decode, decode_json):
            with pytest.raises(EnvelopeError) as err:
                fn(json.dumps(wire(**changes)).encode())
            assert err.value.field == field


def test_a_reserved_source_is_refused_even_after_a_target_of_that_name():
    # '_all' may be a target (broadcast in subjects) but never a source; seeing it as a target first
    # must not let it pass later as a source (the decoder caches ids it has seen valid).
    as_target = wire(target={"instance_id": "_all", "agent_id": "*", "broadcast": False})
    assert decode(json.dumps(as_target).encode()).target.instance_id == "_all"
    as_source = wire(source={"instance_id": "_all", "agent_id": "main"})
    for _ in range(2):
        with pytest.raises(EnvelopeError, match="reserved") as err:
            decode(json.dumps(as_source).encode())
        assert err.value.field == "source.instance_id"
