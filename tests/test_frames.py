"""A pipelined batch writes its HPUB frames straight into nats-py's buffer (nxs_mesh.transport.frames):
the server must store exactly what ``nc.publish`` would have sent, and what nats-py would refuse is
refused here too, against a real server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.frames import header_text
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import encode, new_envelope
from nxs_mesh.wire.errors import PublishError

# Values nats-py changes before sending (trimmed, CR/LF made spaces), a key with spaces around it.
TRICKY = {" X-Note ": "  two\r\nlines ", "X-Plain": "as is", "X-Utf8": "grüße"}
EXPECTED = {"X-Note": "two  lines", "X-Plain": "as is", "X-Utf8": "grüße"}


async def _stored(mesh: Mesh, to: str) -> list[tuple[bytes, dict[str, str]]]:
    return [(rec.data, rec.headers) async for rec in mesh.tail("chat", instance=to)]


def _items(mesh: Mesh, to: str, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    out = []
    for i in range(n):
        env = new_envelope("CHAT", i, source=mesh.source, to=to)
        out.append((subjects.for_envelope(env), encode(env), {"Nats-Msg-Id": env.id, **TRICKY}))
    return out


async def test_frames_store_what_nc_publish_stores(mesh: Mesh) -> None:
    fast, slow = unique_id("fast"), unique_id("slow")
    nc = mesh.pub._nc
    sent_before = nc.stats["out_msgs"]
    acks = await mesh.pub.publish_batch(_items(mesh, fast, 300), 5.0)
    assert all(a.seq is not None for a in acks)  # type: ignore[union-attr]
    assert nc.stats["out_msgs"] - sent_before >= 300  # counted as nc.publish counts

    mesh.pub._frames.usable = False  # the fallback: every frame through nc.publish
    assert mesh.pub._frames.max_payload() == 0
    acks = await mesh.pub.publish_batch(_items(mesh, slow, 300), 5.0)
    assert all(a.seq is not None for a in acks)  # type: ignore[union-attr]

    got_fast, got_slow = await _stored(mesh, fast), await _stored(mesh, slow)
    assert len(got_fast) == len(got_slow) == 300
    for (_, fast_h), (_, slow_h) in zip(got_fast, got_slow, strict=True):
        assert {k: v for k, v in fast_h.items() if k != "Nats-Msg-Id"} == EXPECTED
        assert fast_h.keys() == slow_h.keys() and {k: slow_h[k] for k in EXPECTED} == EXPECTED
    assert [d for d, _ in got_fast] != [d for d, _ in got_slow]  # distinct envelopes, each stored once


def test_header_text_is_nats_py_header_block() -> None:
    mid = str(uuid.uuid4())
    assert header_text({"Nats-Msg-Id": mid}) == f"NATS/1.0\r\nNats-Msg-Id: {mid}\r\n\r\n"
    assert header_text({" ": "skipped", **TRICKY}) == (
        "NATS/1.0\r\nX-Note: two  lines\r\nX-Plain: as is\r\nX-Utf8: grüße\r\n\r\n")


@pytest.mark.parametrize(("subject", "headers", "says"), [
    ("nxs.chat.a b._all", {"Nats-Msg-Id": "x"}, "whitespace"),
    ("", {"Nats-Msg-Id": "x"}, "empty"),
    ("nxs.chat.ok._all", {"Bad:Key": "x"}, "not a token"),
])
async def test_what_nats_py_refuses_is_refused(mesh: Mesh, subject: str, headers: dict[str, str], says: str) -> None:
    to = unique_id("dst")
    good = _items(mesh, to, 3)
    with pytest.raises(PublishError, match=says):
        await mesh.pub.publish_batch([*good, (subject, b"{}", headers)], 5.0)
    assert "0 batches" in repr(mesh.pub)  # nothing of the failed batch stays registered
    acks = await mesh.pub.publish_batch(_items(mesh, to, 3), 5.0)  # the publisher goes on working
    assert all(a.seq is not None for a in acks)  # type: ignore[union-attr]


async def test_over_max_payload_goes_to_nats_py_and_is_its_error(mesh: Mesh) -> None:
    to = unique_id("dst")
    limit = mesh.pub._frames.max_payload()
    assert limit > 0
    big = (subjects.chat(to), b"x" * (limit + 1), {"Nats-Msg-Id": str(uuid.uuid4())})
    with pytest.raises(PublishError):
        await mesh.pub.publish_batch([*_items(mesh, to, 2), big], 5.0)
    async def both_stored() -> bool:  # the frames before it still go out (no ack was waited for)
        return len(await _stored(mesh, to)) == 2

    await eventually(both_stored, timeout=5, what="the two frames before the refused one stored")


async def test_frames_go_through_a_websocket_connection_too(tmp_path: Path) -> None:
    # nats-py's WebSocket transport writes the same pending buffer: a batch over ws:// is stored whole.
    with NatsServer(store_dir=tmp_path / "nats", name=unique_id("ws"), websocket_port=-1) as srv:
        cfg = MeshConfig(servers=(srv.ws_url,), instance_id=unique_id("ws"), data_dir=str(tmp_path / "d"))
        async with Mesh(cfg) as mesh:
            assert mesh.pub._frames.max_payload() > 0  # the fast path is the one taken
            to = unique_id("dst")
            envs = [new_envelope("CHAT", i, source=mesh.source, to=to) for i in range(600)]
            results = await mesh.publish_many(envs)
            assert [r.seq for r in results] == list(range(1, 601))
            assert [rec.envelope.id async for rec in mesh.tail("chat", instance=to) if rec.envelope] == [
                e.id for e in envs]
