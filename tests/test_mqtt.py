"""MQTT devices on the mesh (issue 13 part 2), with the real paho-mqtt client against nats-server's own
MQTT listener: the device of examples/mqtt_device.py heartbeats on nxs/heartbeat/<id>, shows in
`nxs nodes`, is watched by the Doctor, and answers COMMANDs with RESULTs.

MQTT carries no headers, so neither ``Nats-Msg-Id`` nor ``Nats-TTL`` reaches the stream: what holds
dedup and ttl is tested here, on both sides: the device (runs a command once per ``message_id``, never
after ``timestamp + ttl``), the Doctor (a heartbeat is news only with a higher ``seq`` in its epoch) and
the mesh's consumers (acked ids, stored time + ttl) for commands an MQTT client publishes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from node_support import DEAD_AFTER, HB, alerts_about, run_cli

from nxs_mesh import Mesh
from nxs_mesh.client.delivery import Delivery
from nxs_mesh.node.doctor import Doctor, PeerState
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Envelope, Source, encode, new_envelope

ROOT = Path(__file__).resolve().parent.parent


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mqtt_device_example", ROOT / "examples" / "mqtt_device.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but typing looks the module up by name
    spec.loader.exec_module(module)
    return module


example = _load_example()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """The plugin's server plus an MQTT listener (overrides ``nats_server``, so ``mesh`` uses it too)."""
    with NatsServer(store_dir=tmp_path / "nats", name=unique_id("mqtt"), mqtt_port=-1) as srv:
        yield srv


@pytest.fixture
async def device(nats_server: NatsServer) -> Any:
    """A started device; stopped (cleanly, if still running) at the end."""
    host, port = nats_server.mqtt_address
    dev = example.MqttDevice(unique_id("dev:mqtt"), host, port, interval=HB,
                             handlers={"add": lambda args: args["a"] + args["b"]})
    await asyncio.to_thread(dev.start)
    yield dev
    if not dev._stop.is_set():
        await asyncio.to_thread(dev.stop)


async def test_the_device_appears_in_nxs_nodes_and_stops_cleanly(nats_server: NatsServer, mesh: Mesh, device: Any):
    async def listed() -> dict[str, Any] | None:
        code, out, err = await run_cli(nats_server.url, "nodes", "--json")
        assert code == 0, err
        rows = {row["node"]: row for row in json.loads(out)}
        return rows.get(device.id)

    row = await eventually(listed, what=f"{device.id} in `nxs nodes`")
    assert row["state"] == "running" and row["location"] == "mqtt" and row["epoch"] == device.epoch
    await asyncio.to_thread(device.stop, clean=True)
    await eventually(lambda: _state_is(nats_server, device.id, "stopped"), what="stopped in `nxs nodes`")


async def _state_is(server: NatsServer, node: str, state: str) -> bool:
    code, out, _ = await run_cli(server.url, "nodes", "--json")
    return code == 0 and any(r["node"] == node and r["state"] == state for r in json.loads(out))


async def test_a_silent_device_raises_one_death_alert_and_its_last_beat_again_is_no_recovery(
    mesh: Mesh, mesh_factory: Any, device: Any
):
    doctors = [await Doctor(m, dead_after=DEAD_AFTER, interval=HB, redistribute=False).start()
               for m in (mesh, await mesh_factory(instance_id=unique_id("doc")))]
    try:
        await eventually(lambda: all(d.peers.get(device.id) for d in doctors), what="both doctors hear it")
        await asyncio.to_thread(device.stop, clean=False)  # silent, no "stopped": a death
        last = device.last_beat
        await eventually(lambda: all(d.peers[device.id].state is PeerState.DEAD for d in doctors), timeout=15,
                         what="dead for both doctors")
        assert {d.peers[device.id].died_seq for d in doctors} == {last["payload"]["content"]["seq"]}
        alerts = await eventually(lambda: alerts_about(mesh, device.id), what="the death alert")
        assert [(a["event"], a["node"]) for a in alerts] == [("dead", device.id)]
        # Its last beat delivered again (an MQTT QoS 1 retry; no Nats-Msg-Id to drop it) is old news by
        # (epoch, seq). A probe node's beat published after it on the same connection is read after it
        # (one subscription delivers in order): once the doctors know the probe, the duplicate was judged.
        probe = example.MqttDevice(unique_id("probe"), device.host, device.port).envelope(
            "HEARTBEAT", {"epoch": "p", "seq": 1})
        await asyncio.to_thread(_publish_raw, device, [(f"nxs/heartbeat/{device.id}", last),
                                                       (f"nxs/heartbeat/{probe['source']['instance_id']}", probe)])
        await eventually(lambda: all(probe["source"]["instance_id"] in d.peers for d in doctors), what="the probe")
        assert all(d.peers[device.id].state is PeerState.DEAD for d in doctors)
        assert [a["event"] for a in await alerts_about(mesh, device.id)] == ["dead"]
        assert sum(d.alerts_published for d in doctors) == 1  # one alert mesh-wide
    finally:
        for d in doctors:
            await d.stop()


def _publish_raw(device: Any, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Publish ``(topic, envelope)`` in order from a second, plain paho client (the device has stopped)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique_id("replay"))
    client.connect(device.host, device.port)
    client.loop_start()
    try:
        for topic, body in messages:
            client.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_a_command_round_trip_through_mqtt(mesh: Mesh, device: Any):
    reply = await mesh.request(device.id, "add", {"a": 2, "b": 3}, timeout=10)
    assert reply.content == 5 and reply.source.instance_id == device.id
    assert reply.payload.metadata["ok"] is True and reply.correlation_id is not None
    with pytest.raises(Exception, match="no command 'nope'"):
        await mesh.request(device.id, "nope", timeout=10)


async def test_a_duplicate_command_runs_once_and_an_expired_one_never(mesh: Mesh, device: Any):
    corr = unique_id("c")
    env = new_envelope("COMMAND", {"command": "ping", "args": 1}, source=mesh.source, to=device.id,
                       correlation_id=corr, reply_to=subjects.result(corr))
    first = await mesh.send(env)
    again = await mesh.send(env)  # JetStream drops the copy, but core subscribers (MQTT) get both
    assert not first.duplicate and again.duplicate
    stale = _aged(new_envelope("COMMAND", {"command": "ping", "args": "stale"}, source=mesh.source,
                               to=device.id, ttl=30), seconds=60)
    await mesh.send(stale)
    done = await mesh.request(device.id, "ping", "after", timeout=10)  # the device has read everything before
    assert done.content == {"pong": "after"}
    assert len(device.ran) == 2 and device.ran[0] == str(env.id)  # the command once, then "after"
    assert device.skipped["duplicate"] == 1 and device.skipped["expired"] == 1
    results = [r.envelope async for r in mesh.tail("result", filters=[subjects.result(corr)])]
    assert [r.content for r in results if r is not None] == [{"pong": 1}]  # one RESULT for the two sends


def _aged(env: Envelope, *, seconds: float) -> Envelope:
    return msgspec.structs.replace(env, timestamp=datetime.now(UTC) - timedelta(seconds=seconds))


async def test_commands_an_mqtt_client_publishes_are_deduped_and_expired_by_the_consumer(
    nats_server: NatsServer, mesh: Mesh
):
    """No Nats-Msg-Id: both copies are stored, the consumer runs one. No Nats-TTL: a command whose ttl ran
    out while it waited in the stream is still stored, and the consumer (stored time + ttl, the server's
    clock) never hands it to the handler."""
    me = mesh.config.instance_id
    src = Source(unique_id("dev"), "main")
    cmd = new_envelope("COMMAND", {"command": "set", "args": "once"}, source=src, to=me, ttl=60)
    short = new_envelope("COMMAND", {"command": "set", "args": "short-lived"}, source=src, to=me, ttl=1)
    last = new_envelope("COMMAND", {"command": "set", "args": "last"}, source=src, to=me, ttl=60)
    host, port = nats_server.mqtt_address
    await asyncio.to_thread(_publish_all, host, port, [cmd, cmd, short])
    await asyncio.sleep(1.2)  # sleep-ok: the short command's 1 s ttl must run out while it waits for a consumer
    got: list[Any] = []

    async def handler(env: Envelope, delivery: Delivery) -> None:
        got.append(env.content["args"])

    consumer = await mesh.consume("command", handler)
    await asyncio.to_thread(_publish_all, host, port, [last])
    await eventually(lambda: "last" in got, what="the last command handled")
    assert got == ["once", "last"]
    assert consumer.stats.duplicates == 1 and consumer.stats.expired == 1
    stored = [r async for r in mesh.tail("command", filters=[f"nxs.command.{me}.>"])]
    assert len(stored) == 4  # stored as sent: the dedup and the expiry are the consumer's


def _publish_all(host: str, port: int, envelopes: list[Envelope]) -> None:
    """Publish each envelope on its subject's MQTT topic, QoS 1, in order, with a plain paho client."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique_id("pub"))
    client.connect(host, port)
    client.loop_start()
    try:
        for env in envelopes:
            client.publish(subjects.for_envelope(env).replace(".", "/"), encode(env), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_device_ids_must_be_mesh_ids_that_fit_a_topic_level():
    for bad in ("a.b", "a/b", "a+b", "a#", "", "x" * 65):
        with pytest.raises(ValueError, match="device id"):
            example.MqttDevice(bad)
    assert example.MqttDevice("agent:main:main").id == "agent:main:main"  # ':' maps unchanged


async def test_the_example_script_runs_as_the_readme_says(nats_server: NatsServer, mesh: Mesh):  # mesh: the streams
    host, port = nats_server.mqtt_address
    dev = unique_id("sensor")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "mqtt_device.py"), "--id", dev, "--host", host, "--port", str(port),
        "--interval", str(HB), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert first.decode().startswith(f"{dev} on the mesh via mqtt://{host}:{port}"), first
        code, out, err = await run_cli(nats_server.url, "cmd", dev, "read", "--json")
        assert code == 0 and json.loads(out) == {"node": dev, "result": {"temperature_c": 21.5}}, out + err
        proc.terminate()  # SIGTERM: the device says "stopped" before it leaves
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        assert await proc.wait() == 0 and rest.decode() == "stopped cleanly\n"
        await eventually(lambda: _state_is(nats_server, dev, "stopped"), what="stopped in `nxs nodes`")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
