"""Sealed payloads (issue 12 item 5): content encrypted to the target's key (a broadcast: the mesh key),
opened transparently by the receiver, unreadable in the stream; what cannot be opened is dead-lettered
with the reason. Against a real nats-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.client.dlq import list_dead_letters
from nxs_mesh.testing import eventually
from nxs_mesh.testing.keys import MeshKeys, write_mesh_keys
from nxs_mesh.wire.errors import EnvelopeError, SealError
from nxs_mesh.wire.sealing import SEAL_SCHEME, SEALED_HEADER

SECRET = "the launch code is 0000"
NXS = [sys.executable, "-c", "from nxs_cli.app import main; main()"]


@pytest.fixture
def keys(tmp_path: Path) -> MeshKeys:
    return write_mesh_keys(tmp_path / "sec", ["alice", "bob", "carol"])


async def _mesh(keys: MeshKeys, base: MeshConfig, node: str, **kw: object) -> Mesh:
    return await Mesh(keys.config(base, node, **kw)).connect()


async def _inbox(mesh: Mesh, **consume: object) -> tuple[list[object], object]:
    got: list[object] = []

    async def handler(env):
        got.append(env.content)

    return got, await mesh.consume("chat", handler, **consume)


async def test_sealed_content_is_opened_by_the_target_and_unreadable_in_the_stream(
    keys: MeshKeys, mesh_config: MeshConfig
):
    alice, bob = await _mesh(keys, mesh_config, "alice"), await _mesh(keys, mesh_config, "bob")
    try:
        got, _ = await _inbox(bob)
        ack = await alice.publish("CHAT", {"secret": SECRET}, to="bob", metadata={"topic": "ops"}, seal=True)
        await eventually(lambda: got, what="delivery")
        assert got == [{"secret": SECRET}]
        stored = await bob.admin.message("NXS_CHAT", ack.seq)
        assert stored.headers[SEALED_HEADER] == SEAL_SCHEME
        assert SECRET.encode() not in stored.data and b"secret" not in stored.data
        wire = json.loads(stored.data)
        assert wire["target"]["instance_id"] == "bob" and wire["source"]["instance_id"] == "alice"
        assert wire["payload"]["metadata"] == {"topic": "ops"}  # routing and metadata stay readable
        assert isinstance(wire["payload"]["content"], str)
        # The target's own reader opens it; another node's reader sees ciphertext and why.
        [rec] = [r async for r in bob.tail("chat")]
        assert rec.envelope is not None and rec.envelope.content == {"secret": SECRET} and rec.verified
        [other] = [r async for r in alice.tail("chat")]
        assert other.envelope is not None and other.envelope.content == wire["payload"]["content"]
        assert "cannot decrypt" in (other.error or "")
    finally:
        await alice.close()
        await bob.close()


async def test_a_sealed_broadcast_opens_with_the_mesh_key(keys: MeshKeys, mesh_config: MeshConfig):
    alice, bob, carol = [await _mesh(keys, mesh_config, n) for n in ("alice", "bob", "carol")]
    try:
        got_b, _ = await _inbox(bob)
        got_c, _ = await _inbox(carol)
        await alice.publish("CHAT", SECRET, seal=True)
        await eventually(lambda: got_b and got_c, what="both deliveries")
        assert got_b == got_c == [SECRET]
    finally:
        for m in (alice, bob, carol):
            await m.close()


async def test_what_cannot_be_opened_is_dead_lettered_with_the_reason(keys: MeshKeys, mesh_config: MeshConfig):
    """Carol reading bob's messages (her own durable on his subject) holds the wrong key; a node with
    no seal key at all cannot open either: both dead-letter, no handler sees ciphertext."""
    alice = await _mesh(keys, mesh_config, "alice")
    carol = await _mesh(keys, mesh_config, "carol")
    keyless = await Mesh(keys.config(mesh_config, "bob").replace(seal_key=None)).connect()
    try:
        # (one dead letter per stored message, so each reader gets its own message to fail on)
        got_c, c = await _inbox(carol, filters=["nxs.chat.bob.>"], durable="snoop")
        await alice.publish("CHAT", SECRET, to="bob", seal=True)
        await eventually(lambda: c.stats.refused == 1, what="carol refused it")
        await c.stop()
        got_k, k = await _inbox(keyless)
        await alice.publish("CHAT", SECRET, to="bob", seal=True)
        await eventually(lambda: k.stats.refused == 2, what="the keyless reader refused both")
        assert got_c == got_k == []
        reasons = [d.reason async for d in list_dead_letters(alice)]
        assert any("cannot decrypt: not sealed to this node's key" in r for r in reasons), reasons
        assert any("this node has no seal_key" in r for r in reasons), reasons
    finally:
        for m in (alice, carol, keyless):
            await m.close()


async def test_sealing_needs_the_recipient_key(keys: MeshKeys, mesh_config: MeshConfig):
    alice = await _mesh(keys, mesh_config, "alice")
    plain = await Mesh(mesh_config.replace(instance_id="plain")).connect()
    try:
        with pytest.raises(SealError, match="no seal key for node 'dave'"):
            await alice.publish("CHAT", SECRET, to="dave", seal=True)
        with pytest.raises(SealError, match="no trust file"):
            await plain.publish("CHAT", SECRET, to="bob", seal=True)
        with pytest.raises(EnvelopeError, match="payload.content: not JSON-encodable"):
            await alice.publish("CHAT", {"when": object()}, to="bob", seal=True)
    finally:
        await alice.close()
        await plain.close()


def test_nxs_pub_seal(keys: MeshKeys, nats_server, tmp_path: Path):
    """`nxs pub --seal` as a user runs it: the stored bytes hold no plaintext, the target's tail opens it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NXS_")}

    def env_of(node: str) -> dict[str, str]:
        d = keys.node_dir(node)
        return {**base, "HOME": str(tmp_path), "NXS_DATA_DIR": str(tmp_path / "data"), "NXS_INSTANCE_ID": node,
                "NXS_URL": nats_server.url, "NXS_NKEY_SEED": str(d / "node.nk"),
                "NXS_TRUST_FILE": str(keys.trust_file), "NXS_SEAL_KEY": str(d / "seal.key"), "NXS_SECURE": "true"}

    def nxs(node: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NXS, *args], capture_output=True, text=True, env=env_of(node), cwd=tmp_path,
                              timeout=60)

    assert nxs("alice", "init").returncode == 0
    r = nxs("alice", "pub", "chat", "--to", "bob", "--seal", SECRET, "--json")
    assert r.returncode == 0, r.stderr
    seq = json.loads(r.stdout)["seq"]
    raw = nxs("alice", "tail", "chat", "--json")
    assert SECRET not in raw.stdout and raw.returncode == 0
    mine = nxs("bob", "tail", "chat")  # the table shows the opened content (--json is the wire bytes)
    assert "launch code" in mine.stdout, mine.stdout + mine.stderr
    bad = nxs("alice", "pub", "chat", "--to", "dave", "--seal", SECRET)
    assert bad.returncode == 1 and "no seal key for node 'dave'" in bad.stderr and "Traceback" not in bad.stderr
    assert seq >= 1
