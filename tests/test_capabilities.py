"""Capabilities (issue 12 item 4): a command or task runs only for a signer the node's policy or an
admin-signed, unexpired grant allows; otherwise a `not authorized` RESULT and no handler call. Task
claims are signed: a forged claim or `done` record is ignored, and a caller believes a task's result
only from the node whose signed claim holds it. In-process nodes against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from nxs_mesh import Mesh, MeshConfig, RemoteError
from nxs_mesh.client.admin import BucketSpec
from nxs_mesh.client.dlq import list_dead_letters
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.tasks import BUCKET, TaskStore, submit_task
from nxs_mesh.testing import eventually
from nxs_mesh.testing.keys import MeshKeys, write_mesh_keys
from nxs_mesh.wire.errors import MeshTimeout
from nxs_mesh.wire.grants import issue_grant

FAST = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False)
POLICY = """
[mesh]
secure = true

[[policy.allow]]
signer = "admin"
commands = ["*"]
tasks = ["*"]

[[policy.allow]]
signer = "alice"
commands = ["ping", "secret"]
tasks = ["double"]
"""


@pytest.fixture
def keys(tmp_path: Path) -> MeshKeys:
    return write_mesh_keys(tmp_path / "sec", ["worker", "alice", "bob"])


@pytest.fixture
async def worker(keys: MeshKeys, mesh_config: MeshConfig, tmp_path: Path):
    policy = tmp_path / "nxs.toml"
    policy.write_text(POLICY)
    node = Node(keys.config(mesh_config, "worker", policy_file=str(policy)), FAST)
    node.calls = []  # type: ignore[attr-defined]

    @node.command("secret")
    async def secret(args):
        node.calls.append(args)  # type: ignore[attr-defined]
        return {"got": args}

    @node.task("double")
    async def double(payload):
        return payload * 2

    async with node:
        yield node


async def _mesh(keys: MeshKeys, base: MeshConfig, node: str) -> Mesh:
    return await Mesh(keys.config(base, node)).connect()


async def test_policy_decides_who_runs_a_command(worker: Node, keys: MeshKeys, mesh_config: MeshConfig):
    alice, bob, admin = [await _mesh(keys, mesh_config, n) for n in ("alice", "bob", "admin")]
    try:
        assert (await alice.request("worker", "secret", 1, timeout=10)).content == {"got": 1}
        with pytest.raises(RemoteError, match=r"not authorized: node 'bob' may not run command 'secret' on worker"):
            await bob.request("worker", "secret", 2, timeout=10)
        assert (await admin.request("worker", "secret", 3, timeout=10)).content == {"got": 3}
        with pytest.raises(RemoteError, match="not authorized"):  # this policy gives bob nothing, not even ping
            await bob.request("worker", "ping", None, timeout=10)
        assert (await alice.request("worker", "ping", None, timeout=10)).content["pong"] == "worker"
    finally:
        calls = list(worker.calls)  # type: ignore[attr-defined]
        letters = [d.reason async for d in list_dead_letters(alice)]
        for m in (alice, bob, admin):
            await m.close()
    assert calls == [1, 3]  # bob's never reached the handler
    assert any("not authorized: node 'bob'" in r for r in letters)


async def test_grants_signed_by_the_admin_give_expiring_rights(worker: Node, keys: MeshKeys,
                                                               mesh_config: MeshConfig):
    bob = await _mesh(keys, mesh_config, "bob")
    admin, alice = keys.signer("admin"), keys.signer("alice")
    try:
        cases = {
            "expired": (issue_grant(admin, sub="bob", node="worker", allow=["secret"], ttl=-5), "expired"),
            "other node": (issue_grant(admin, sub="bob", node="elsewhere", allow=["secret"]), "does not cover"),
            "other sub": (issue_grant(admin, sub="alice", allow=["secret"]), "does not cover"),
            "not admin": (issue_grant(alice, sub="bob", allow=["*"]), "not signed by the admin key"),
            "garbage": ("not-a-token", "not a token"),
        }
        for name, (token, why) in cases.items():
            bob.grant = token
            with pytest.raises(RemoteError, match="not authorized") as err:
                await bob.request("worker", "secret", name, timeout=10)
            assert why in str(err.value), (name, str(err.value))
        bob.grant = issue_grant(admin, sub="bob", node="worker", allow=["secret"], ttl=60)
        assert (await bob.request("worker", "secret", "granted", timeout=10)).content == {"got": "granted"}
        bob.grant = issue_grant(admin, sub=keys.signer("bob").public, allow=["*"], ttl=60)  # by key, any node
        assert (await bob.request("worker", "secret", "by key", timeout=10)).content == {"got": "by key"}
        assert worker.calls == ["granted", "by key"]  # type: ignore[attr-defined]
    finally:
        await bob.close()


async def test_a_sealed_command_is_opened_and_authorized(worker: Node, keys: MeshKeys, mesh_config: MeshConfig):
    alice = await _mesh(keys, mesh_config, "alice")
    try:
        reply = await alice.request("worker", "secret", {"pin": "4321"}, timeout=10, seal=True)
        assert reply.content == {"got": {"pin": "4321"}}
        stored = [r async for r in alice.tail("command")]
        assert stored and all(b"4321" not in r.data and b"secret" not in r.data for r in stored)
        answers = [r async for r in alice.tail("result")]  # the answer went back sealed to alice
        assert answers and all(b"4321" not in r.data and r.headers.get("Nxs-Sealed") for r in answers)
        assert answers[-1].envelope is not None and answers[-1].envelope.content == {"got": {"pin": "4321"}}
    finally:
        await alice.close()


async def test_task_capabilities_are_authorized(worker: Node, keys: MeshKeys, mesh_config: MeshConfig):
    alice, bob = await _mesh(keys, mesh_config, "alice"), await _mesh(keys, mesh_config, "bob")
    try:
        _, result = await submit_task(alice, "double", 21, wait=True, timeout=15)
        assert result is not None and result.content == 42
        with pytest.raises(RemoteError, match="not authorized: node 'bob' may not run task 'double'"):
            await submit_task(bob, "double", 1, wait=True, timeout=15)
    finally:
        await alice.close()
        await bob.close()


async def test_forged_claim_records_are_ignored(worker: Node, keys: MeshKeys, mesh_config: MeshConfig):
    """A `done` record written ahead of the worker (unsigned, or signed by another node's key) does not
    become the task's result: the worker claims over it and the caller gets the real one."""
    alice = await _mesh(keys, mesh_config, "alice")
    bob = await _mesh(keys, mesh_config, "bob")
    anon = await Mesh(mesh_config.replace(instance_id="anon")).connect()
    try:
        forged = {"state": "done", "node": "worker", "epoch": "x", "result": 666}
        unsigned = TaskStore(await anon.admin.bucket(BucketSpec(BUCKET, ttl=86400.0)))
        by_bob = await TaskStore.open(bob)
        for store in (unsigned, by_bob):
            task_id = str(uuid.uuid4())
            assert await store.cas(task_id, forged, 0) is not None
            _, result = await submit_task(alice, "double", 21, wait=True, timeout=15, task_id=task_id)
            assert result is not None and result.content == 42
            record, _ = await (await TaskStore.open(alice)).get(task_id)
            assert record is not None and record["result"] == 42 and record["signer"] == keys.signer("worker").public
    finally:
        for m in (alice, bob, anon):
            await m.close()


async def test_a_forged_task_result_is_not_believed(keys: MeshKeys, mesh_config: MeshConfig):
    """Nobody serves the capability; bob (a trusted node, signing as himself) and an anonymous client
    answer for the task: the caller believes neither and times out."""
    alice = await _mesh(keys, mesh_config, "alice")
    bob = await _mesh(keys, mesh_config, "bob")
    anon = await Mesh(mesh_config.replace(instance_id="anon")).connect()
    task_id = str(uuid.uuid4())
    try:
        waiting = asyncio.ensure_future(submit_task(alice, "nobody", 1, wait=True, timeout=3, task_id=task_id))
        request = await eventually(lambda: alice.admin.message("NXS_TASK", 1), what="the stored task")
        assert request.envelope is not None and request.envelope.id == task_id
        for forger in (bob, anon):
            await forger.reply(request.envelope, 666, node="worker")
        with pytest.raises(MeshTimeout):
            await waiting
    finally:
        for m in (alice, bob, anon):
            await m.close()


async def test_a_secure_node_is_seen_alive_and_its_stop_believed(keys: MeshKeys, mesh_config: MeshConfig):
    """Secure mode end to end for presence: the node's own heartbeats and statuses are signed, so a
    secure Doctor tracks it, and its clean stop is taken as one (no false death)."""
    from nxs_mesh import Doctor

    watcher = await _mesh(keys, mesh_config, "admin")
    events: list[dict] = []

    async def on_event(alert: dict) -> None:
        events.append(alert)

    doctor = await Doctor(watcher, dead_after=1.0, interval=0.2, redistribute=False, on_event=on_event).start()
    try:
        async with Node(keys.config(mesh_config, "worker"), FAST):
            await eventually(lambda: "worker" in doctor.peers and doctor.peers["worker"].state == "alive",
                             what="worker alive")
            assert watcher.security.flagged == 0
        await eventually(lambda: doctor.peers["worker"].state == "stopped", what="clean stop seen")
    finally:
        await doctor.stop()
        await watcher.close()
    assert [a["event"] for a in events if a["node"] == "worker"] == [], events


def test_policy_files_are_checked(tmp_path: Path, mesh_config: MeshConfig):
    from nxs_mesh.node.authorize import DEFAULT_POLICY, load_policy
    from nxs_mesh.wire.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text('[[policy.allow]]\nsigner = "alice"\ncommands = "ping"\n')
    with pytest.raises(ConfigError, match=r"policy.allow\[0\]: expected a list of names"):
        load_policy(bad)
    bad.write_text('[[policy.allow]]\ncommands = ["ping"]\n')
    with pytest.raises(ConfigError, match="needs signer"):
        load_policy(bad)
    assert DEFAULT_POLICY.allows("command", "ping", signer="U1", node="n1", admin=False)
    assert not DEFAULT_POLICY.allows("command", "sleep", signer="U1", node="n1", admin=False)
    assert DEFAULT_POLICY.allows("command", "sleep", signer="U2", node=None, admin=True)
