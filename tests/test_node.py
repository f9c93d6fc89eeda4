"""The worker embedded in-process (``async with Node(...)``): handlers, status, durability, failures."""

from __future__ import annotations

import asyncio

import pytest
from node_support import last_status, results_for, wait_state

from nxs_mesh import Mesh, MeshConfig, RemoteError
from nxs_mesh.client.dlq import list_dead_letters
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.tasks import submit_task
from nxs_mesh.testing import eventually, unique_id

FAST = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False)


def node_config(mesh_config: MeshConfig, **kw: object) -> MeshConfig:
    return mesh_config.replace(instance_id=unique_id("node"), **kw)


async def test_embedded_node_decorators_status_heartbeat_and_stop(mesh: Mesh, mesh_config: MeshConfig):
    node = Node(node_config(mesh_config, location="lab"), FAST)

    @node.command("greet")
    async def greet(args, ctx):
        return f"hello {args} from {ctx.node_id}"

    @node.task("double")
    async def double(payload):
        return payload * 2

    async with node:
        assert "RUNNING" in repr(node) and node.node_id in repr(node)
        st = await wait_state(mesh, node.node_id, "running")
        assert st["epoch"] == node.epoch and st["location"] == "lab" and st["capabilities"] == ["double"]
        assert {"ping", "status", "echo", "sleep", "greet"} <= set(st["commands"])
        assert st["path"] == "local" and st["outbox"] == 0  # which server path it uses; nothing waiting
        assert node.mesh is not None and node.mesh.outbox is not None  # publishes can queue offline
        reply = await mesh.request(node.node_id, "greet", "ann", timeout=10)
        assert reply.content == f"hello ann from {node.node_id}"
        status = await mesh.request(node.node_id, "status", None, timeout=10)
        assert status.content["state"] == "running"
        _, result = await submit_task(mesh, "double", 21, wait=True, timeout=15)
        assert result is not None and result.content == 42 and result.payload.metadata["node"] == node.node_id
        raw = await mesh.last("heartbeat", f"nxs.heartbeat.{node.node_id}")
        assert raw is not None and len(raw.data) < 600  # heartbeats stay small (idle traffic budget)
    assert (await last_status(mesh, node.node_id))["state"] == "stopped"
    assert "STOPPED" in repr(node)


async def test_command_sent_while_down_runs_on_return_expired_one_does_not(mesh: Mesh, mesh_config: MeshConfig):
    cfg = node_config(mesh_config)
    seen: list[str] = []

    def make() -> Node:
        node = Node(cfg, FAST)

        @node.command("record")
        async def record(args):
            seen.append(args)
            return args

        return node

    async with make():
        pass  # first run creates the node's durable command consumer
    await mesh.publish("COMMAND", {"command": "record", "args": "expired"}, to=cfg.instance_id, ttl=1)
    await mesh.publish("COMMAND", {"command": "record", "args": "late"}, to=cfg.instance_id, ttl=120,
                       correlation_id="late-1", reply_to="nxs.result.late-1")
    await asyncio.sleep(1.5)  # sleep-ok: letting the 1 s ttl of the first command pass while the node is down
    async with make() as node:
        await eventually(lambda: "late" in seen, timeout=15, what="queued command handled on return")
        after = await mesh.request(node.node_id, "record", "after", timeout=10)
        assert after.content == "after"
    # Commands are consumed in order, so by the time "after" ran the expired one was screened out.
    assert seen == ["late", "after"]
    results = await results_for(mesh, "late-1")
    assert [r.content for r in results] == ["late"]


async def test_failing_handler_retried_then_dead_lettered_garbage_too_worker_survives(
    mesh: Mesh, mesh_config: MeshConfig
):
    node = Node(node_config(mesh_config, max_deliver=2), NodeOptions(
        heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False, capabilities=("echo",)))
    calls = []

    @node.command("boom")
    async def boom(args):
        calls.append(args)
        raise ValueError("kaboom")

    async with node:
        nid = node.node_id
        await mesh.publish("COMMAND", {"command": "boom", "args": 1}, to=nid)
        await mesh.link.js.publish(f"nxs.command.{nid}._all.p1", b"this is not json", headers={"Nats-Msg-Id": "g1"})
        await mesh.link.js.publish("nxs.task.echo.p1", b'{"message_id": 7}', headers={"Nats-Msg-Id": "g2"})
        await mesh.publish("COMMAND", "no command field", to=nid)

        async def dead() -> list:
            got = [d async for d in list_dead_letters(mesh)]
            return got if len(got) >= 4 else []

        letters = await eventually(dead, timeout=20, what="four dead letters")
        reasons = {d.subject.split(".")[1] + ":" + d.reason for d in letters}
        assert calls == [1, 1]  # tried max_deliver (2) times
        assert any("ValueError: kaboom" in r and "gave up after 2" in r for r in reasons)
        assert any(r.startswith("command:invalid envelope") for r in reasons)
        assert any(r.startswith("task:invalid envelope") for r in reasons)
        assert any("not a command" in r for r in reasons)
        with pytest.raises(RemoteError, match="unknown command 'nope'"):
            await mesh.request(nid, "nope", None, timeout=10)
        pong = await mesh.request(nid, "ping", None, timeout=10)  # still serving
        assert pong.content["pong"] == nid
        assert node.state == "running"


def test_user_handlers_from_module_path(tmp_path, monkeypatch):
    from nxs_mesh.node.handlers import Registry, builtin_registry, load_handlers
    from nxs_mesh.wire.errors import ConfigError

    pkg = tmp_path / "my_agent_handlers.py"
    pkg.write_text(
        "from nxs_mesh.node.handlers import Registry\n"
        "registry = Registry()\n"
        "@registry.command('hello')\n"
        "async def hello(args):\n    return 'hi'\n"
        "def setup(reg):\n"
        "    @reg.task('resize')\n"
        "    async def resize(payload, ctx):\n        return payload\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = load_handlers(Registry(), ["my_agent_handlers:registry", "my_agent_handlers:setup"], plugins=False)
    assert set(reg.commands) == {"hello"} and set(reg.tasks) == {"resize"}
    assert {"ping", "status", "echo", "sleep"} <= set(builtin_registry().commands)
    with pytest.raises(ConfigError, match="module:object"):
        load_handlers(Registry(), ["no_colon_here"], plugins=False)
    with pytest.raises(ConfigError, match="cannot import"):
        load_handlers(Registry(), ["not_a_module_xyz:obj"], plugins=False)
