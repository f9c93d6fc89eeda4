"""Verified senders (issue 12 item 3): every envelope signed with the sender's nkey; in secure mode an
unsigned, wrongly signed, replayed, stale or misattributed envelope is dead-lettered with the reason
and never handled; open mode handles it and flags it. Against a real nats-server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.client.dlq import list_dead_letters
from nxs_mesh.client.security import MessageSecurity
from nxs_mesh.testing import eventually
from nxs_mesh.testing.keys import MeshKeys, write_mesh_keys
from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import MSG_ID_HEADER
from nxs_mesh.wire.envelope import Source, encode, new_envelope
from nxs_mesh.wire.errors import ConfigError, VerificationError
from nxs_mesh.wire.signing import SIG_HEADER, SIGNER_HEADER, Signer, b64url, signing_input, verify
from nxs_mesh.wire.trust import check_envelope, load_trust

# A fixed key and message: the vector docs/security-wire.md gives other languages to test against.
VECTOR_SEED = b"SUAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4H776Y"  # raw ed25519 seed bytes 0..31
VECTOR_SIG = "RqvEMxVc0JMNdk_gbRoavzcxR-J1MEDKymm2VtQFjh4jSmOLdLrWF2BbQJqehEk80v3SVJEIFX5lrQQqmhjyBg"


@pytest.fixture
def keys(tmp_path: Path) -> MeshKeys:
    return write_mesh_keys(tmp_path / "sec", ["alice", "bob", "carol"])


async def _mesh(keys: MeshKeys, base: MeshConfig, node: str, **kw: object) -> Mesh:
    return await Mesh(keys.config(base, node, **kw)).connect()


async def _collect(mesh: Mesh) -> tuple[list[tuple[str, str | None]], object]:
    got: list[tuple[str, str | None]] = []

    async def handler(env, delivery):
        got.append((env.content, delivery.signer))

    return got, await mesh.consume("chat", handler)


async def _reasons(mesh: Mesh, n: int) -> list[str]:
    async def letters():
        found = [d.reason async for d in list_dead_letters(mesh)]
        return found if len(found) >= n else None

    return await eventually(letters, what=f"{n} dead letters")


def test_the_signed_bytes_are_the_documented_ones():
    assert signing_input("nxs.chat.b._all", "id-1", b"{}") == b"nxs-sig-v1\nnxs.chat.b._all\nid-1\n{}"
    signer = Signer(VECTOR_SEED)
    assert signer.public == "UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK"
    mid = "0190a9e2-6c1f-4b8e-9a55-2f6f2c3d4e5f"
    headers = signer.headers("nxs.chat.bob._all", mid, b'{"hello":"world"}')
    assert headers == {SIGNER_HEADER: signer.public, SIG_HEADER: VECTOR_SIG}
    assert "=" not in VECTOR_SIG and len(VECTOR_SIG) == len(b64url(bytes(64)))
    assert verify(signer.public, "nxs.chat.bob._all", mid, b'{"hello":"world"}', VECTOR_SIG)
    # Bound to subject, message id and body: change any and it does not verify.
    assert not verify(signer.public, "nxs.chat.carol._all", mid, b'{"hello":"world"}', VECTOR_SIG)
    assert not verify(signer.public, "nxs.chat.bob._all", mid.replace("5f", "60"), b'{"hello":"world"}', VECTOR_SIG)
    assert not verify(signer.public, "nxs.chat.bob._all", mid, b'{"hello":"World"}', VECTOR_SIG)
    assert not verify("UNOTAKEY", "nxs.chat.bob._all", mid, b'{"hello":"world"}', VECTOR_SIG)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "security-wire.md").read_text()
    assert VECTOR_SEED.decode() in doc and signer.public in doc and VECTOR_SIG in doc and mid in doc


def test_freshness_window_and_skew(keys: MeshKeys):
    trust = load_trust(keys.trust_file)
    alice = keys.signer("alice")
    env = new_envelope("CHAT", "x", source=Source("alice", "main"), to="bob", ttl=300)
    data, subject = encode(env), subjects.for_envelope(env)
    headers = {**alice.headers(subject, env.id, data), MSG_ID_HEADER: env.id}
    sent = env.timestamp.timestamp()
    assert check_envelope(trust, env, subject, data, headers, now=sent) == alice.public
    assert check_envelope(trust, env, subject, data, headers, now=sent + 300 + 59)  # ttl + skew
    assert check_envelope(trust, env, subject, data, headers, now=sent - 59)  # sender's clock ahead
    with pytest.raises(VerificationError, match="stale or replayed"):
        check_envelope(trust, env, subject, data, headers, now=sent + 300 + 61)
    with pytest.raises(VerificationError, match="in the future"):
        check_envelope(trust, env, subject, data, headers, now=sent - 61)


def test_secure_mode_needs_its_keys(keys: MeshKeys, mesh_config: MeshConfig):
    with pytest.raises(ConfigError, match="trust_file"):
        MessageSecurity.from_config(mesh_config.replace(secure=True))
    with pytest.raises(ConfigError, match="nkey_seed"):
        MessageSecurity.from_config(keys.config(mesh_config, "alice").replace(nkey_seed=None))


async def test_a_signed_envelope_is_handled_with_its_signer(keys: MeshKeys, mesh_config: MeshConfig):
    alice, bob = await _mesh(keys, mesh_config, "alice"), await _mesh(keys, mesh_config, "bob")
    try:
        got, consumer = await _collect(bob)
        ack = await alice.publish("CHAT", "hello", to="bob")
        await eventually(lambda: got, what="delivery")
        assert got == [("hello", keys.signer("alice").public)]
        stored = await bob.admin.message("NXS_CHAT", ack.seq)
        assert stored.headers[SIGNER_HEADER] == keys.signer("alice").public
        records = [r async for r in bob.tail("chat")]
        assert [r.verified for r in records] == [True]
    finally:
        await alice.close()
        await bob.close()


async def test_bad_envelopes_are_dead_lettered_with_the_reason(keys: MeshKeys, mesh_config: MeshConfig):
    """Unsigned, tampered, signed by another node's key, stale, or re-published under a foreign
    Nats-Msg-Id: each is refused, the handler sees only the good one."""
    bob = await _mesh(keys, mesh_config, "bob")
    raw = await Mesh(mesh_config.replace(instance_id="alice")).connect()  # no key: publishes unsigned
    try:
        got, consumer = await _collect(bob)
        alice, carol = keys.signer("alice"), keys.signer("carol")

        async def put(env, signer, *, tamper=False, msg_id=None):
            data, subject = encode(env), subjects.for_envelope(env)
            headers = {MSG_ID_HEADER: msg_id or env.id, **(signer.headers(subject, env.id, data) if signer else {})}
            await raw.pub.publish(subject, data.replace(b"orig", b"evil") if tamper else data, headers, 5)

        src = Source("alice", "main")
        await raw.publish("CHAT", "unsigned", to="bob")
        await put(new_envelope("CHAT", "orig", source=src, to="bob"), alice, tamper=True)
        await put(new_envelope("CHAT", "as alice", source=src, to="bob"), carol)
        old = new_envelope("CHAT", "old", source=src, to="bob", ttl=60)
        await put(msgspec.structs.replace(old, timestamp=datetime.now(UTC) - timedelta(minutes=10)), alice)
        await put(new_envelope("CHAT", "fresh id", source=src, to="bob"), alice,
                  msg_id="11111111-2222-4333-8444-555555555555")
        await put(new_envelope("CHAT", "good", source=src, to="bob"), alice)
        reasons = await _reasons(bob, 5)
        await eventually(lambda: got, what="the good one")
        assert got == [("good", alice.public)]
        assert consumer.stats.refused == 5
        assert all(r.startswith("refused: ") for r in reasons)
        joined = " | ".join(reasons)
        for why in ("unsigned envelope", "bad signature", "source 'alice' is not its signer (node 'carol'",
                    "stale or replayed", "is not the envelope's message_id"):
            assert why in joined
    finally:
        await raw.close()
        await bob.close()


async def test_a_replay_of_a_handled_message_is_refused(keys: MeshKeys, mesh_config: MeshConfig):
    """The captured bytes and signature stored again under a replay-style id (which the server does not
    deduplicate) reach no handler: the receiver remembers the id at its first sequence."""
    alice, bob = await _mesh(keys, mesh_config, "alice"), await _mesh(keys, mesh_config, "bob")
    try:
        got, consumer = await _collect(bob)
        ack = await alice.publish("CHAT", "pay 10", to="bob")
        await eventually(lambda: got, what="first delivery")
        stored = await bob.admin.message("NXS_CHAT", ack.seq)
        headers = {**stored.headers, MSG_ID_HEADER: "replay:NXS_DLQ:999"}
        again = await alice.pub.publish(stored.subject, stored.data, headers, 5)
        assert again.seq != ack.seq
        reasons = await _reasons(bob, 1)
        assert "replayed: message_id" in reasons[0]
        assert got == [("pay 10", keys.signer("alice").public)]
    finally:
        await alice.close()
        await bob.close()


async def test_open_mode_flags_a_bad_signature_but_handles_it(keys: MeshKeys, mesh_config: MeshConfig):
    bob = await _mesh(keys, mesh_config, "bob", secure=False)
    alice = await _mesh(keys, mesh_config, "alice", secure=False)
    try:
        got, consumer = await _collect(bob)
        env = new_envelope("CHAT", "orig", source=Source("alice", "main"), to="bob")
        data, subject = encode(env), subjects.for_envelope(env)
        headers = {MSG_ID_HEADER: env.id, **keys.signer("carol").headers(subject, env.id, data)}
        await alice.pub.publish(subject, data, headers, 5)
        await alice.publish("CHAT", "signed", to="bob")
        await eventually(lambda: len(got) == 2, what="both handled")
        assert got == [("orig", None), ("signed", keys.signer("alice").public)]
        assert bob.security.flagged == 1 and consumer.stats.refused == 0
        assert [r.verified for r in [r async for r in bob.tail("chat")]] == [False, True]
    finally:
        await alice.close()
        await bob.close()


async def test_secure_readers_drop_records_that_fail(keys: MeshKeys, mesh_config: MeshConfig):
    """A forged stored heartbeat (the Doctor's `last` read) has no envelope for a secure reader."""
    bob = await _mesh(keys, mesh_config, "bob")
    try:
        forged = new_envelope("HEARTBEAT", {"epoch": "e", "seq": 99, "state": "stopped"},
                              source=Source("alice", "main"), ttl=0)
        subject = subjects.heartbeat("alice")
        data = encode(forged)
        await bob.publish_now(subject, data)  # signed by bob: not alice's key
        await bob.flush()
        rec = await eventually(lambda: bob.last("heartbeat", subject), what="stored heartbeat")
        assert rec.envelope is None and rec.verified is False
        assert "not its signer" in (rec.error or "")
        assert not bob.accepts(forged, subject, data, rec.headers)
    finally:
        await bob.close()


async def test_the_doctor_ignores_heartbeats_that_fail_verification(keys: MeshKeys, mesh_config: MeshConfig):
    """A heartbeat about bob signed with carol's key (the issue's "silence the Doctor" attack) and an
    old replayed one are not believed; alice's own is."""
    from nxs_mesh import Doctor

    watcher, carol = await _mesh(keys, mesh_config, "admin"), await _mesh(keys, mesh_config, "carol")
    alice = await _mesh(keys, mesh_config, "alice")
    doctor = await Doctor(watcher, dead_after=5.0, interval=1.0, redistribute=False).start()
    try:
        forged = new_envelope("HEARTBEAT", {"epoch": "e1", "seq": 1000, "state": "running"},
                              source=Source("bob", "main"), ttl=0)
        await carol.publish_now(subjects.heartbeat("bob"), encode(forged))
        stale = new_envelope("HEARTBEAT", {"epoch": "e0", "seq": 1, "state": "running"},
                             source=Source("alice", "main"), ttl=0)
        stale = msgspec.structs.replace(stale, timestamp=datetime.now(UTC) - timedelta(minutes=5))
        await alice.publish_now(subjects.heartbeat("alice"), encode(stale))
        await carol.flush()
        await alice.flush()
        real = new_envelope("HEARTBEAT", {"epoch": "e2", "seq": 1, "state": "running"},
                            source=Source("alice", "main"), ttl=0)
        await alice.publish_now(subjects.heartbeat("alice"), encode(real))
        await eventually(lambda: "alice" in doctor.peers, what="alice's heartbeat")
        assert doctor.peers["alice"].epoch == "e2"
        assert "bob" not in doctor.peers
    finally:
        await doctor.stop()
        for m in (alice, carol, watcher):
            await m.close()


async def test_a_message_queued_offline_is_signed_when_queued(keys: MeshKeys, mesh_config: MeshConfig,
                                                              tmp_path: Path):
    """`nxs pub` with no server queues the envelope signed (and sealed): a node flushing the outbox later
    sends exactly those bytes, and a secure receiver takes them."""
    from nxs_mesh.client.outbox import Outbox
    from nxs_mesh.client.publishing import queue_offline
    from nxs_mesh.client.security import outgoing_headers

    cfg = keys.config(mesh_config, "alice")
    box = Outbox(tmp_path / "outbox.sqlite")
    env = new_envelope("CHAT", "while offline", source=Source("alice", "main"), to="bob")
    security = MessageSecurity.from_config(cfg)
    queue_offline(box, security.seal(env), security=security, extra=outgoing_headers(env, seal=True, grant=None))
    [item] = box.peek()
    assert item.headers[SIGNER_HEADER] == keys.signer("alice").public and b"while offline" not in item.data
    bob = await _mesh(keys, mesh_config, "bob")
    alice = await Mesh(cfg, outbox=box).connect()  # its flusher sends what waits
    try:
        got, _ = await _collect(bob)
        await eventually(lambda: got, what="the queued message")
        assert got == [("while offline", keys.signer("alice").public)]
    finally:
        await alice.close()
        await bob.close()
        box.close()


def test_a_bad_trust_file_is_an_error_naming_the_file_and_the_fault(tmp_path):
    from nxs_mesh.deploy.identity import load_trust as load_trust_dict
    from nxs_mesh.wire.errors import ConfigError

    missing, garbage, wrong = tmp_path / "none.json", tmp_path / "garbage.json", tmp_path / "wrong.json"
    garbage.write_text("{not json")
    wrong.write_text('{"version": 2, "nodes": {}}')
    for path, why in ((missing, "cannot read"), (garbage, "is not JSON"), (wrong, "not an nxs trust file")):
        for reader in (load_trust, load_trust_dict):  # the library's and deploy's view read it the same way
            with pytest.raises(ConfigError, match=why) as err:
                reader(path)
            assert str(path) in str(err.value)
