"""MQTT devices on a secure mesh (issue 13 part 1, "the identities from the security issue"), with the
real paho-mqtt client against a secure server's ``mqtts://`` listener (``SecureCluster(devices=...)``).

A device has a certificate mapped to its own user (``verify_and_map``), on MQTT connections only, that
may publish only its own heartbeat, status and RESULTs and read only its own commands. It cannot sign,
so receivers accept its *unsigned* envelopes only on its own subjects and only because trust.json lists
it (``wire.trust.check_envelope``); what makes that safe is that nobody else may publish there, which is
tested here from both sides: a node cannot forge a device's heartbeat, a device cannot publish as a node
or as another device, and what it puts on its own subject under another name is refused by receivers.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from node_support import alerts_about, run_cli
from test_mqtt import example

from nxs_mesh import Mesh, PermissionDenied
from nxs_mesh.deploy.identity import revoke_identity
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.node.provision import provision
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.testing.secure import DeviceFiles, SecureCluster
from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Source, decode, encode, new_envelope
from nxs_mesh.wire.errors import VerificationError
from nxs_mesh.wire.trust import DEVICE_SIGNER, NodeKeys, Trust, check_envelope

ROOT = Path(__file__).resolve().parent.parent
DEV, OTHER = "sensor-1", "sensor-2"
HB = 0.2


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    """One secure server (n1's identity, admin, two devices) with its mqtts:// listener, provisioned."""
    with SecureCluster(tmp_path_factory.mktemp("secure-mqtt"), size=1, devices=[DEV, OTHER]) as sc:
        async def provision_all() -> None:
            async with Mesh(sc.config("admin")) as admin:
                await provision(admin, ["n1"], replicas=1)

        asyncio.run(provision_all())
        yield sc


def _device(sc: SecureCluster, device: str = DEV, **kw: Any) -> Any:
    host, port = sc.mqtt_address
    return example.MqttDevice(device, host, port, interval=HB, tls=tuple(sc.device_files(device)),
                              handlers={"add": lambda args: args["a"] + args["b"]}, **kw)


@pytest.fixture
async def device(secure: SecureCluster) -> Any:
    dev = _device(secure)
    await asyncio.to_thread(dev.start)
    yield dev
    if not dev._stop.is_set():
        await asyncio.to_thread(dev.stop)


# -- the trust rule, on its own ---------------------------------------------------------------------

def test_receivers_accept_an_unsigned_envelope_only_from_a_listed_device_on_its_own_subjects():
    trust = Trust({"n1": NodeKeys("UNODE")}, devices=frozenset({DEV, OTHER}))
    dev = Source(DEV, "main", "mqtt")

    def check(env: Any, subject: str) -> str:
        return check_envelope(trust, env, subject, encode(env), None, datetime.now(UTC).timestamp())

    beat = new_envelope("HEARTBEAT", {"epoch": "e", "seq": 1}, source=dev, ttl=0)
    status = new_envelope("STATUS", {"state": "running"}, source=dev)
    result = new_envelope("RESULT", 5, source=dev, correlation_id="c-1", to="n1")
    assert check(beat, subjects.heartbeat(DEV)) == DEVICE_SIGNER + DEV
    assert check(status, subjects.status(DEV)) == DEVICE_SIGNER + DEV
    assert check(result, subjects.result("c-1")) == DEVICE_SIGNER + DEV
    refusals = [
        (beat, subjects.heartbeat(OTHER), "may send only its own"),  # on another device's subject
        (result, subjects.result("c-2"), "may send only its own"),  # not its correlation id
        (new_envelope("CHAT", "hi", source=dev, to="n1"), subjects.chat("n1"), "not a CHAT"),
        (new_envelope("COMMAND", {"command": "x"}, source=dev, to="n1"), subjects.command("n1"), "not a COMMAND"),
        (new_envelope("HEARTBEAT", {"seq": 1}, source=Source("n1", "main"), ttl=0), subjects.heartbeat("n1"),
         "unsigned envelope"),  # a node's heartbeat must be signed, whoever published it
        (new_envelope("HEARTBEAT", {"seq": 1}, source=Source("stranger", "main"), ttl=0),
         subjects.heartbeat("stranger"), "unsigned envelope"),  # not listed as a device
        (msgspec.structs.replace(status, timestamp=datetime.now(UTC) - timedelta(hours=1)), subjects.status(DEV),
         "stale or replayed"),
    ]
    for env, subject, why in refusals:
        with pytest.raises(VerificationError, match=why):
            check(env, subject)


# -- against the real server --------------------------------------------------------------------------

async def test_a_secure_device_is_listed_by_nxs_nodes_and_answers_a_secure_caller(secure: SecureCluster,
                                                                                device: Any):
    n1_toml = str(secure.layout.node_dir("n1") / "nxs.toml")

    async def listed() -> dict[str, Any] | None:
        code, out, err = await run_cli(secure.urls[0], "--config", n1_toml, "nodes", "--json")
        assert code == 0, err
        return {row["node"]: row for row in json.loads(out)}.get(DEV)

    row = await eventually(listed, what=f"{DEV} in `nxs nodes` of a secure node")
    assert row["state"] == "running" and row["epoch"] == device.epoch and row["location"] == "mqtt"
    async with Mesh(secure.config("n1")) as n1:
        assert n1.security.secure
        reply = await n1.request(DEV, "add", {"a": 2, "b": 3}, timeout=10)
        assert reply.content == 5 and reply.source.instance_id == DEV and reply.payload.metadata["ok"] is True


async def test_the_doctor_of_a_secure_node_raises_one_death_alert_for_a_silent_device(secure: SecureCluster,
                                                                                     device: Any):
    node = await Node(secure.config("n1"), NodeOptions(heartbeat_interval=HB, dead_after=1.0, outbox=False)).start()
    try:
        doctor = node.doctor
        assert doctor is not None
        await eventually(lambda: DEV in doctor.peers, timeout=10, what="the doctor hears the device")
        await asyncio.to_thread(device.stop, clean=False)  # silent, no "stopped": a death
        async with Mesh(secure.config("admin")) as admin:
            alerts = await eventually(lambda: alerts_about(admin, DEV), timeout=20, what="the death alert")
            assert [(a["event"], a["node"]) for a in alerts] == [("dead", DEV)]
    finally:
        await node.stop()


async def test_a_node_identity_cannot_forge_a_device_heartbeat_or_status(secure: SecureCluster, device: Any):
    async with Mesh(secure.config("n1"), outbox=None) as n1:
        dev = Source(DEV, "main", "mqtt")
        beat = new_envelope("HEARTBEAT", {"epoch": device.epoch, "seq": 10**9, "state": "stopped"}, source=dev, ttl=0)
        with pytest.raises(PermissionDenied, match=rf"nxs\.heartbeat\.{DEV}"):
            await n1.send(beat, subject=subjects.heartbeat(DEV))
        with pytest.raises(PermissionDenied, match=rf"nxs\.status\.{DEV}"):
            await n1.send(new_envelope("STATUS", {"state": "stopped"}, source=dev), subject=subjects.status(DEV))
        last = await n1.last("heartbeat", subjects.heartbeat(DEV))
        assert last is not None and last.envelope is not None
        assert last.envelope.content["seq"] < 10**9 and last.verified  # the device's own, believed


async def test_a_device_cannot_publish_as_a_node_or_another_device_nor_read_their_commands(secure: SecureCluster):
    dev = Source(OTHER, "main", "mqtt")
    def beat_of(node: str) -> Any:
        return new_envelope("HEARTBEAT", {"epoch": "f", "seq": 1}, source=Source(node, "main"), ttl=0)

    forged = [(subjects.heartbeat("n1"), beat_of("n1")), (subjects.heartbeat(DEV), beat_of(DEV)),
              (subjects.chat("n1"), new_envelope("CHAT", "hello", source=dev, to="n1"))]
    # On its own subject the server lets it through, but under another name receivers refuse it.
    as_node = new_envelope("HEARTBEAT", {"epoch": "x", "seq": 1}, source=Source("n1", "main"), ttl=0)
    probe = new_envelope("HEARTBEAT", {"epoch": "p", "seq": 1}, source=dev, ttl=0)
    files = secure.device_files(OTHER)
    granted = await asyncio.to_thread(_mqtt_session, secure, files, [*forged, (subjects.heartbeat(OTHER), as_node),
                                                                      (subjects.heartbeat(OTHER), probe)],
                                      subscribe=[f"nxs/command/{DEV}/#", f"nxs/command/{OTHER}/#"])
    assert granted == [False, True]  # SUBACK: another device's commands refused, its own granted
    async with Mesh(secure.config("n1")) as n1:
        # One MQTT connection is handled in order: once the probe is stored, the forgeries were judged.
        last = await eventually(lambda: n1.last("heartbeat", subjects.heartbeat(OTHER)), what="the probe stored")
        assert last.envelope is not None and last.envelope.id == probe.id
        stored = [r async for r in n1.tail("heartbeat")]
        assert probe.id in {r.envelope.id for r in stored if r.envelope is not None}
        assert all(as_node.id not in r.data.decode() for r in stored)  # rolled up by the probe, never believed
        heard = [decode(r.data) for r in stored if r.subject in (subjects.heartbeat("n1"), subjects.heartbeat(DEV))]
        assert all(h.id not in {e.id for _, e in forged} for h in heard)
        # The envelope it stored under n1's name on its own subject: refused by a secure receiver.
        with pytest.raises(VerificationError, match="unsigned envelope"):
            n1.security.check(as_node, subjects.heartbeat(OTHER), encode(as_node), None)
    async with Mesh(secure.config("admin")) as admin:  # nodes may not read chat history; admin may
        chats = [r.envelope async for r in admin.tail("chat", filters=[subjects.chat("n1")])]
        assert all(e is None or e.source.instance_id != OTHER for e in chats)


def _mqtt_session(sc: SecureCluster, files: DeviceFiles, messages: list[tuple[str, Any]], *,
                  subscribe: list[str]) -> list[bool]:
    """Connect as a device, subscribe (returns which topics the broker granted), publish in order (QoS 1)."""
    host, port = sc.mqtt_address
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique_id("dev"))
    client.tls_set(ca_certs=files.ca, certfile=files.cert, keyfile=files.key)
    acked = threading.Event()
    granted: list[bool] = []

    def on_subscribe(_c: Any, _u: Any, _mid: Any, codes: list[Any], _p: Any) -> None:
        granted.extend(not code.is_failure for code in codes)
        acked.set()

    client.on_subscribe = on_subscribe
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe([(t, 1) for t in subscribe])
        assert acked.wait(10), "no SUBACK"
        for subject, env in messages:
            client.publish(subject.replace(".", "/"), encode(env), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    return granted


def _connects(sc: SecureCluster, *, tls: bool, cert: tuple[str, str] | None) -> str:
    """Try one MQTT session: "connected", or how it failed."""
    host, port = sc.mqtt_address
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique_id("try"))
    if tls:
        client.tls_set(ca_certs=str(sc.layout.ca_pem), certfile=cert[0] if cert else None,
                       keyfile=cert[1] if cert else None)
    done = threading.Event()
    outcome: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append("connected" if not reason.is_failure else f"refused: {reason}")
        done.set()

    def on_disconnect(*_: Any) -> None:
        outcome.append("disconnected")
        done.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        client.connect(host, port)
        client.loop_start()
        done.wait(10)
    except (OSError, ssl.SSLError) as exc:
        outcome.append(f"handshake: {type(exc).__name__}")
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0] if outcome else "no answer"


async def test_plain_tcp_strangers_and_node_certificates_are_refused_on_mqtts(secure: SecureCluster):
    node = secure.layout.node_dir("n1")
    mine = secure.device_files(DEV)
    attempts = {
        "plain tcp": await asyncio.to_thread(_connects, secure, tls=False, cert=None),
        "tls, no certificate": await asyncio.to_thread(_connects, secure, tls=True, cert=None),
        "a node's certificate": await asyncio.to_thread(_connects, secure, tls=True,
                                                        cert=(str(node / "node.pem"), str(node / "node.key"))),
        "the device's certificate": await asyncio.to_thread(_connects, secure, tls=True, cert=(mine.cert, mine.key)),
    }
    assert attempts["the device's certificate"] == "connected", attempts
    assert all(v != "connected" for k, v in attempts.items() if k != "the device's certificate"), attempts


async def test_the_example_script_runs_over_mqtts_with_its_device_directory(secure: SecureCluster):
    host, port = secure.mqtt_address
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "mqtt_device.py"), "--id", DEV, "--host", host, "--port", str(port),
        "--interval", str(HB), "--tls-dir", str(secure.layout.device_dir(DEV)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert first.decode().startswith(f"{DEV} on the mesh via mqtts://{host}:{port}"), first
        n1_toml = str(secure.layout.node_dir("n1") / "nxs.toml")
        code, out, err = await run_cli(secure.urls[0], "--config", n1_toml, "cmd", DEV, "read", "--json")
        assert code == 0 and json.loads(out) == {"node": DEV, "result": {"temperature_c": 21.5}}, out + err
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_revoked_device_is_refused_once_the_server_restarts(tmp_path: Path):
    """nats-server cannot reload MQTT settings (a SIGHUP is refused: "config reload not supported for MQTT"),
    so revoking a device means re-rendering and restarting the servers that run the MQTT listener."""
    with SecureCluster(tmp_path, size=1, devices=["keep", "gone"]) as sc:
        def attempt(device: str) -> str:
            files = sc.device_files(device)
            return _connects(sc, tls=True, cert=(files.cert, files.key))

        assert [await asyncio.to_thread(attempt, d) for d in ("keep", "gone")] == ["connected", "connected"]
        revoke_identity(sc.layout.root, "gone")
        await asyncio.to_thread(sc.restart)  # re-rendered without its pin and its user
        assert await asyncio.to_thread(attempt, "keep") == "connected"
        assert await asyncio.to_thread(attempt, "gone") != "connected"
