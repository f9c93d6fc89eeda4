"""Poison messages (issue 10, item 0): whatever a foreign publisher sends, every input is settled
(handled, or dead-lettered with a reason) and the worker stays able to answer commands.

The poison is published with plain nats-py, as another program on the mesh would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import nats
import pytest

from nxs_mesh import Mesh, Node, NodeOptions
from nxs_mesh.testing import eventually, unique_id

FAST = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False)


def envelope(to: str, kind: str = "COMMAND", content: object = None, **extra: object) -> dict:
    return {
        "message_id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "source": {"instance_id": "foreign", "agent_id": "js"},
        "target": {"instance_id": to, "agent_id": "*", "broadcast": False},
        "message_type": kind, "payload": {"content": content if content is not None else {"command": "ping"},
                                          "metadata": {}},
        "priority": 1, "ttl": 300, **extra,
    }


async def dead_letters(mesh: Mesh) -> list:
    return [rec async for rec in mesh.tail("dlq")]


async def answers(mesh: Mesh, node: Node) -> bool:
    reply = await mesh.request(node.node_id, "ping", timeout=5)
    return reply.content["pong"] == node.node_id


@pytest.fixture
async def raw(nats_server):
    nc = await nats.connect(nats_server.url)
    yield nc
    await nc.close()


async def test_deeply_nested_envelope_is_dead_lettered_and_workers_stay_deaf_free(mesh: Mesh, mesh_config, raw):
    """10,000 nested '[' make msgspec raise RecursionError: before, the command consumer of every
    worker died silently on the broadcast subject, and again after each restart."""
    nodes = [Node(mesh_config.replace(instance_id=unique_id("deaf")), FAST) for _ in range(2)]
    for node in nodes:
        await node.start()
    try:
        body = json.dumps(envelope("*", content={"command": "ping"})).replace('"ping"', "[" * 10_000 + "]" * 10_000)
        await raw.jetstream().publish("nxs.command._all._all.p1", body.encode(), headers={"Nats-Msg-Id": "deep"})

        async def stored() -> list:
            return [r for r in await dead_letters(mesh) if r.headers.get("Nxs-Dlq-Stream") == "NXS_COMMAND"]

        # Both workers settle it; the dead letter's id (stream + sequence) stores it once.
        [letter] = await eventually(stored, timeout=20, what="the poison dead-lettered")
        assert "nested too deeply" in letter.headers["Nxs-Dlq-Reason"]
        for node in nodes:
            assert await answers(mesh, node)
            assert node.state == "running"
    finally:
        for node in nodes:
            await node.stop()


async def test_invalid_message_near_max_payload_does_not_close_the_connection(mesh: Mesh, mesh_config, raw):
    """Its dead-letter copy (bytes + Nxs-Dlq-* headers) would exceed max_payload: the server would
    answer -ERR and nats-py close the connection for good. A truncated copy is stored instead."""
    node = Node(mesh_config.replace(instance_id=unique_id("big")), FAST)
    async with node:
        size = raw.max_payload - 300
        await raw.jetstream().publish(f"nxs.command.{node.node_id}._all.p1", b"x" * size,
                                      headers={"Nats-Msg-Id": "near-max"})

        async def stored() -> list:
            return [r for r in await dead_letters(mesh) if r.headers.get("Nxs-Dlq-Stream") == "NXS_COMMAND"]

        [letter] = await eventually(stored, timeout=15, what="the big message dead-lettered")
        assert len(letter.data) < size and letter.headers.get("Nxs-Dlq-Seq")
        assert "invalid" in letter.headers["Nxs-Dlq-Reason"]
        assert await answers(mesh, node)


async def test_valid_near_max_chat_whose_handler_fails_is_dead_lettered_truncated(mesh: Mesh, mesh_config, raw):
    """Reachable without malice: a valid 1 MiB - 420 B CHAT whose handler failed max_deliver times."""
    inbox = unique_id("inbox")
    sub = await Mesh(mesh_config.replace(instance_id=inbox, max_deliver=2)).connect()
    calls = []

    async def failing(env):
        calls.append(env.id)
        raise RuntimeError("cannot digest this: " + "z" * 400)

    try:
        await sub.consume("chat", failing, backoff_base=0.05)
        env = envelope(inbox, kind="CHAT", content="")
        filler = raw.max_payload - 420 - len(json.dumps(env))
        env["payload"]["content"] = "y" * filler
        await raw.jetstream().publish(f"nxs.chat.{inbox}._all", json.dumps(env).encode(),
                                      headers={"Nats-Msg-Id": env["message_id"]})

        async def stored() -> list:
            return [r for r in await dead_letters(mesh) if r.headers.get("Nxs-Dlq-Stream") == "NXS_CHAT"]

        [letter] = await eventually(stored, timeout=20, what="the failing chat dead-lettered")
        assert "cannot digest this" in letter.headers["Nxs-Dlq-Reason"] and len(calls) == 2
        # The consumer is alive: the next chat is handled.
        ok = []

        async def fine(env):
            ok.append(env.content)

        await sub.consume("chat", fine, durable=unique_id("fine"), backoff_base=0.05)
        await mesh.publish("CHAT", "small", to=inbox)
        await eventually(lambda: "small" in ok, timeout=10, what="the consumer still works")
    finally:
        await sub.close()


async def test_envelope_on_a_subject_that_disagrees_is_dead_lettered(mesh: Mesh, mesh_config, raw):
    """A valid envelope addressed to another node (or of another type) on this node's subject."""
    node = Node(mesh_config.replace(instance_id=unique_id("addr")), FAST)
    ran = []

    @node.command("mark")
    async def mark(args):
        ran.append(args)

    async with node:
        elsewhere = envelope("someone-else", content={"command": "mark", "args": "wrong target"})
        chat = envelope(node.node_id, kind="CHAT", content={"command": "mark", "args": "wrong type"})
        js = raw.jetstream()
        for env in (elsewhere, chat):
            await js.publish(f"nxs.command.{node.node_id}._all.p1", json.dumps(env).encode(),
                             headers={"Nats-Msg-Id": env["message_id"]})

        async def stored() -> list:
            return [r for r in await dead_letters(mesh) if r.headers.get("Nxs-Dlq-Stream") == "NXS_COMMAND"]

        letters = await eventually(lambda: _at_least(stored, 2), timeout=15, what="both dead-lettered")
        assert all("subject" in r.headers["Nxs-Dlq-Reason"] for r in letters)
        assert ran == []


async def test_dotted_correlation_id_is_dead_lettered_before_the_handler_runs(mesh: Mesh, mesh_config, raw):
    """Item 2: a correlation id the RESULT subject cannot carry ("req.42") used to pass decode, run the
    handler, fail building the RESULT, and run the handler again on every redelivery."""
    node = Node(mesh_config.replace(instance_id=unique_id("corr")), FAST)
    ran = []

    @node.command("effect")
    async def effect(args):
        ran.append(args)
        return "done"

    async with node:
        env = envelope(node.node_id, content={"command": "effect", "args": 1}, correlation_id="req.42",
                       reply_to="nxs.result.req.42")
        await raw.jetstream().publish(f"nxs.command.{node.node_id}._all.p1", json.dumps(env).encode(),
                                      headers={"Nats-Msg-Id": env["message_id"]})

        async def stored() -> list:
            return [r for r in await dead_letters(mesh) if r.headers.get("Nxs-Dlq-Stream") == "NXS_COMMAND"]

        [letter] = await eventually(stored, timeout=15, what="dead-lettered")
        assert "correlation_id" in letter.headers["Nxs-Dlq-Reason"]
        assert ran == []
        assert await answers(mesh, node)


async def _at_least(fn, n: int) -> list | None:
    got = await fn()
    return got if len(got) >= n else None
