"""Issue 12's attacks against a real three-server cluster rendered by `nxs deploy render --secure`.

Each test tries one thing a client with no credentials, or with node n1's, could do on an open mesh,
and shows the server refuses it while the legitimate traffic of the other nodes goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import stat
import uuid
from pathlib import Path

import nats
import pytest

from nxs_mesh import ConnectError, JetStreamUnavailable, Mesh, MeshTimeout, PermissionDenied
from nxs_mesh.client.dlq import list_dead_letters
from nxs_mesh.deploy.identity import init_identities, revoke_identity
from nxs_mesh.deploy.render import render_config
from nxs_mesh.deploy.tailscale import parse_host_flag
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.provision import provision
from nxs_mesh.node.tasks import TaskStore, submit_task
from nxs_mesh.testing import eventually
from nxs_mesh.testing.secure import SecureCluster
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Source, encode, new_envelope

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with SecureCluster(tmp_path_factory.mktemp("secure")) as sc:
        yield sc


@pytest.fixture(scope="module")
def provisioned(cluster: SecureCluster) -> SecureCluster:
    async def go() -> None:
        async with Mesh(cluster.config("admin")) as admin:
            await provision(admin, ["n1", "n2", "n3"])

    asyncio.run(go())
    return cluster


@pytest.fixture
async def node3(provisioned: SecureCluster):
    node = Node(provisioned.config("n3"), NodeOptions(heartbeat_interval=0.5, doctor=False, capabilities=("echo",)))
    await node.start()
    yield node
    await node.stop()


async def _raw(sc: SecureCluster, name: str, **kw) -> nats.NATS:
    """A bare nats-py client with an identity's files: what an attacker holding them could run."""
    d = sc.layout.node_dir(name)
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    ctx.load_cert_chain(str(d / "node.pem"), str(d / "node.key"))
    return await nats.connect(sc.urls[0], tls=ctx, nkeys_seed=str(d / "node.nk"), allow_reconnect=False,
                              connect_timeout=2, inbox_prefix=f"_INBOX_nxs.{name}", **kw)


async def test_a_legitimate_command_is_run_and_answered(node3: Node, provisioned: SecureCluster):
    async with Mesh(provisioned.config("n1")) as n1:
        reply = await n1.request("n3", "echo", {"x": 1}, timeout=10)
        assert reply.content == {"x": 1} and reply.source.instance_id == "n3"


async def test_reading_another_nodes_commands_live_or_stored_is_refused(node3: Node, provisioned: SecureCluster):
    async with Mesh(provisioned.config("n1")) as n1:
        with pytest.raises(PermissionDenied, match=r"nxs\.command\.n3\.>"):
            await n1.subscribe("nxs.command.n3.>", _ignore)
        with pytest.raises(PermissionDenied, match="'>'"):
            await n1.subscribe(">", _ignore)
        with pytest.raises(PermissionDenied, match="NXS_COMMAND"):  # stored history: a reader consumer
            [r async for r in n1.tail("command", instance="n3")]
        with pytest.raises(PermissionDenied, match="NXS_COMMAND"):  # stored history: a direct get
            await n1.admin.message("NXS_COMMAND", 1)
        # its own commands' consumer exists and n3 still gets commands while n1 is refused
        assert (await n1.request("n3", "echo", "still here", timeout=10)).content == "still here"


async def test_a_node_cannot_make_its_consumer_read_other_nodes_commands(provisioned: SecureCluster):
    nc = await _raw(provisioned, "n1")
    try:
        js = nc.jetstream(timeout=2)
        cfg = nats.js.api.ConsumerConfig(durable_name="command-n1", filter_subjects=["nxs.command.n3.>"])
        with pytest.raises(nats.errors.TimeoutError):  # refused by the server: no answer at all
            await js.add_consumer("NXS_COMMAND", cfg)
    finally:
        await nc.close()
    async with Mesh(provisioned.config("admin")) as admin:
        info = await admin.link.js.consumer_info("NXS_COMMAND", "command-n1")
        assert sorted(info.config.filter_subjects or []) == ["nxs.command._all.>", "nxs.command.n1.>"]


async def test_a_command_claiming_another_source_is_dead_lettered_and_never_run(
        node3: Node, provisioned: SecureCluster):
    async with Mesh(provisioned.config("n1")) as n1:
        n2 = Source(instance_id="n2", agent_id="main", location="")
        forged = new_envelope("COMMAND", {"command": "echo", "args": "as n2"}, source=n2, to="n3",
                              correlation_id="forged-1", reply_to=subjects.result("forged-1"))
        await n1.send(forged)  # signed with n1's key, so the server stores it; n3 must refuse it
        nc = await _raw(provisioned, "n1")  # and one with no signature at all
        try:
            unsigned = new_envelope("COMMAND", {"command": "echo", "args": "unsigned"}, source=n2, to="n3")
            await nc.jetstream().publish(subjects.for_envelope(unsigned), encode(unsigned),
                                         headers={"Nats-Msg-Id": unsigned.id})
        finally:
            await nc.close()
    async with Mesh(provisioned.config("admin")) as admin:
        async def letters() -> dict[str, str] | None:
            found = {mid: d.reason async for d in list_dead_letters(admin)
                     for mid in (forged.id, unsigned.id) if mid.encode() in d.data}
            return found if len(found) == 2 else None

        reasons = await eventually(letters, timeout=20)
        assert "node 'n1'" in reasons[forged.id] and "unsigned" in reasons[unsigned.id]
        assert await admin.last("result", subjects.result("forged-1")) is None  # never ran, never answered


async def test_a_forged_task_claim_or_result_is_not_believed(node3: Node, provisioned: SecureCluster):
    """n2 may read NXS_TASKS (workers share it) and write it, but a `done` record it writes ahead of the
    worker, and a RESULT it sends for the task, are not believed: the caller gets n3's real result."""
    async with Mesh(provisioned.config("n1")) as n1, Mesh(provisioned.config("n2")) as n2:
        task_id = str(uuid.uuid4())
        forged = {"state": "done", "node": "n3", "epoch": "x", "result": "forged"}
        assert await (await TaskStore.open(n2)).cas(task_id, forged, 0) is not None
        _, result = await submit_task(n1, "echo", "real", wait=True, timeout=20, task_id=task_id)
        assert result is not None and result.content == "real" and result.source.instance_id == "n3"
        record, _ = await (await TaskStore.open(n1)).get(task_id)
        assert record is not None and record["result"] == "real"

        lonely = str(uuid.uuid4())  # nobody serves "nobody": n2 answers for it, the caller believes none
        waiting = asyncio.ensure_future(submit_task(n1, "nobody", 1, wait=True, timeout=4, task_id=lonely))
        request = await eventually(lambda: _stored_task(n1, lonely), timeout=10)
        await n2.reply(request, "forged", node="n3")
        with pytest.raises(MeshTimeout):
            await waiting


async def _stored_task(mesh: Mesh, task_id: str):
    async for rec in mesh.tail("task"):
        if rec.envelope is not None and rec.envelope.id == task_id:
            return rec.envelope
    return None


async def test_sealed_content_is_unreadable_in_the_stream(node3: Node, provisioned: SecureCluster):
    async with Mesh(provisioned.config("n1")) as n1:
        sent = await n1.publish("CHAT", "the secret plan", to="n3", seal=True)
    async with Mesh(provisioned.config("admin")) as admin:
        rec = await admin.admin.message("NXS_CHAT", sent.seq)
        assert rec is not None and b"the secret plan" not in rec.data and b'"n3"' in rec.data


async def test_forging_another_nodes_status_or_heartbeat_is_refused(node3: Node, provisioned: SecureCluster):
    async with Mesh(provisioned.config("n1"), outbox=None) as n1:
        n3 = Source(instance_id="n3", agent_id="main", location="")
        forged = new_envelope("STATUS", {"state": "stopped"}, source=n3)
        with pytest.raises(PermissionDenied, match=r"nxs\.status\.n3"):
            await n1.send(forged, subject=subjects.status("n3"))
        beat = new_envelope("HEARTBEAT", {"seq": 10**9, "state": "stopped"}, source=n3)
        with pytest.raises(PermissionDenied, match=r"nxs\.heartbeat\.n3"):
            await n1.send(beat, subject=subjects.heartbeat("n3"))
        last = await n1.last("heartbeat", subjects.heartbeat("n3"))
        assert last is not None and last.envelope.source.instance_id == "n3"  # n3's own, not the forgery


async def test_purging_or_deleting_streams_and_consumers_is_refused(provisioned: SecureCluster):
    async with Mesh(provisioned.config("n1")) as n1:
        with pytest.raises(PermissionDenied, match="PURGE.NXS_COMMAND"):
            await n1.admin.purge("NXS_COMMAND")
        with pytest.raises(PermissionDenied, match="STREAM.DELETE.NXS_CHAT"):
            await n1.link.js.delete_stream("NXS_CHAT")
        with pytest.raises(PermissionDenied, match="CONSUMER.DELETE.NXS_COMMAND.command-n2"):
            await n1.link.js.delete_consumer("NXS_COMMAND", "command-n2")
        with pytest.raises(PermissionDenied, match="STREAM.CREATE"):
            await n1.link.js.add_stream(nats.js.api.StreamConfig(name="ROGUE", subjects=["rogue.>"]))
    async with Mesh(provisioned.config("admin")) as admin:
        assert await admin.admin.consumer("NXS_COMMAND", "command-n2") is not None
        assert await admin.admin.stream("NXS_CHAT") is not None


async def test_clients_without_a_trusted_identity_cannot_connect(provisioned: SecureCluster, tmp_path: Path):
    base = provisioned.config("n1").replace(secure=False)  # only what the server checks, not our signing
    with pytest.raises(ConnectError):  # no certificate, no nkey
        await Mesh(base.replace(tls_cert=None, tls_key=None, nkey_seed=None), ensure=False).connect()
    with pytest.raises(ConnectError):  # a valid certificate but no nkey: authentication fails
        await Mesh(base.replace(nkey_seed=None), ensure=False).connect()
    import nkeys

    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    with pytest.raises(ConnectError):  # an nkey nobody trusts
        await Mesh(base.replace(nkey_seed=str(stranger)), ensure=False).connect()


@pytest.mark.parametrize("rogue_tls", [False, True], ids=["plain", "foreign-ca"])
def test_a_rogue_server_cannot_join_the_cluster(provisioned: SecureCluster, tmp_path: Path, rogue_tls: bool):
    rogue_host, target = parse_host_flag("rogue=127.0.0.9"), parse_host_flag("n1=127.0.0.1")
    if rogue_tls:  # a server with a certificate from its own CA, trying the secure route port
        init_identities(tmp_path / "foreign", [rogue_host, target])
        opts = dataclasses.replace(provisioned.opts, secure_dir=str(tmp_path / "foreign"),
                                   store_dir=str(tmp_path / "rogue"))
    else:
        opts = dataclasses.replace(provisioned.opts, secure_dir=None, store_dir=str(tmp_path / "rogue"))
    conf = tmp_path / "rogue.conf"
    conf.write_text(render_config(rogue_host, [rogue_host, target], opts))
    rogue = NatsServer(host="127.0.0.9", port=opts.client_port, name="rogue", config_file=conf, jetstream=False)
    rogue.start()
    try:
        def attempts():
            return sum("Router connection closed" in line or "TLS route handshake error" in line
                                       or "error" in line.lower() for line in rogue.log)
        assert _wait(lambda: attempts() >= 2, 20), "\n".join(rogue.log)
        assert _routes(rogue) == set()
    finally:
        rogue.cleanup()
    assert "rogue" not in _routes(provisioned.servers[0])
    assert _routes(provisioned.servers[0]) == {"n2", "n3"}


def _routes(srv: NatsServer) -> set[str]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{srv.monitor_url}/routez", timeout=2) as resp:
        return {r.get("remote_name") or r.get("remote_id") for r in json.load(resp).get("routes") or []}


async def test_a_revoked_node_is_disconnected_and_cannot_connect_again(tmp_path: Path):
    with SecureCluster(tmp_path) as sc:
        async with Mesh(sc.config("admin")) as admin:
            await provision(admin, ["n1", "n2", "n3"])
        n2 = await Mesh(sc.config("n2"), ensure=False).connect()
        try:
            revoke_identity(sc.layout.root, "n2")
            sc.reload()
            await eventually(lambda: not n2.is_connected or n2.reopens > 0, timeout=15)
        finally:
            await n2.close()
        with pytest.raises(ConnectError):
            await Mesh(sc.config("n2"), ensure=False).connect()
        async with Mesh(sc.config("n1"), ensure=False) as n1:  # the others carry on (once n2's server is gone)
            async def stored() -> int | None:
                try:
                    return (await n1.publish("CHAT", "after the revoke", to="n3")).seq
                except (JetStreamUnavailable, MeshTimeout):  # streams elect leaders among the two servers left
                    return None

            assert await eventually(stored, timeout=30)


def test_the_outbox_file_is_private(tmp_path: Path):
    from nxs_mesh.client.outbox import Outbox

    box = Outbox(tmp_path / "data" / "outbox-n1.sqlite")
    try:
        box.put("nxs.chat.x._all", b"{}", {}, message_id="m1", stream="NXS_CHAT")
    finally:
        box.close()
    for f in (tmp_path / "data").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f"{f} is readable by others"


async def test_files_are_shared_between_least_privileged_nodes(provisioned: SecureCluster, tmp_path: Path):
    async with Mesh(provisioned.config("n1")) as n1, Mesh(provisioned.config("n2")) as n2:
        await n1.files.put(b"context bundle " * 1000, name="bundle.bin")
        await n2.files.get("bundle.bin", tmp_path / "got.bin")
        assert (tmp_path / "got.bin").read_bytes() == b"context bundle " * 1000
        await n2.files.delete("bundle.bin")
        assert [f.name for f in await n1.files.list()] == []


def test_key_files_are_written_0600(provisioned: SecureCluster):
    for path in provisioned.layout.root.rglob("*"):
        if path.suffix in (".key", ".nk"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def _ignore(subject: str, data: bytes, headers: object) -> None:
    return None


def _wait(cond, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)  # sleep-ok: polling a server log (another thread fills it) with a deadline
    return False
