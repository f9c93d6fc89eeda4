"""WebSocket and MQTT listeners (issue 13 part 1): rendered configs nats-server accepts and serves,
plaintext only on loopback, TLS and nkey users with ``--secure`` (MQTT there: mqtts:// for device
certificates only), and `nxs up --websocket/--mqtt` serving real clients (the Mesh over ws/wss, paho-mqtt)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from test_cli_core import Proc, _isolated, nxs  # noqa: F401 - _isolated is an autouse fixture

from nxs_mesh import Mesh
from nxs_mesh.config import MeshConfig, load_config
from nxs_mesh.deploy.identity import init_identities
from nxs_mesh.deploy.listeners import Listener, check_plaintext, is_loopback, parse_listener
from nxs_mesh.deploy.render import DeployOptions, check_config, render_config
from nxs_mesh.deploy.tailscale import MeshHost
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer, free_port
from nxs_mesh.wire.envelope import Envelope, Source, encode, new_envelope
from nxs_mesh.wire.errors import ConfigError, ConnectError

HOST = MeshHost("n1", ipv4="127.0.0.1")
ROOT = Path(__file__).resolve().parent.parent


def test_listener_flags_parse_and_a_bad_one_names_its_flag():
    assert parse_listener("websocket", "8080") == Listener("websocket", 8080, None)
    assert parse_listener("mqtt", "127.0.0.1:1883") == Listener("mqtt", 1883, "127.0.0.1")
    assert parse_listener("mqtt", "[::1]:1883") == Listener("mqtt", 1883, "::1")
    for bad in ("", "x", "0", "70000", ":80", "host:"):
        with pytest.raises(ConfigError, match="^--websocket: "):
            parse_listener("websocket", bad)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("100.64.0.1") and not is_loopback("n1.tailnet.ts.net")
    with pytest.raises(ConfigError, match=r"^--mqtt: the mqtt listener on 0\.0\.0\.0:1883 would run without TLS"):
        check_plaintext(Listener("mqtt", 1883), "0.0.0.0")


def _opts(tmp_path: Path, **more: Any) -> DeployOptions:
    return DeployOptions(client_port=free_port(), cluster_port=free_port(), monitor_port=free_port(),
                         store_dir=str(tmp_path / "js"), listen="tailscale", **more)


def _serve(conf_text: str, tmp_path: Path, opts: DeployOptions) -> NatsServer:
    conf = tmp_path / "n1.conf"
    conf.write_text(conf_text)
    check_config(conf)
    return NatsServer(host="127.0.0.1", port=opts.client_port, monitor_port=opts.monitor_port, name="n1",
                      store_dir=tmp_path / "js", config_file=conf, jetstream=False).start()


async def test_rendered_loopback_listeners_serve_a_mesh_over_ws_and_an_mqtt_client(tmp_path: Path):
    ws_port, mqtt_port = free_port(), free_port()
    opts = _opts(tmp_path, websocket=str(ws_port), mqtt=f"127.0.0.1:{mqtt_port}")
    text = render_config(HOST, [HOST], opts)
    assert f'websocket {{\n  listen: "127.0.0.1:{ws_port}"\n  no_tls: true' in text
    assert f'mqtt {{\n  listen: "127.0.0.1:{mqtt_port}"' in text and 'server_name: "n1"' in text
    srv = _serve(text, tmp_path, opts)
    try:
        assert srv.ws_url == f"ws://127.0.0.1:{ws_port}" and srv.mqtt_address == ("127.0.0.1", mqtt_port)
        cfg = MeshConfig(servers=(srv.ws_url,), instance_id=unique_id("ws"), data_dir=str(tmp_path / "d"))
        got: list[Any] = []

        async def handler(env: Envelope) -> None:
            got.append((env.source.instance_id, env.content))

        async with Mesh(cfg) as mesh:
            await mesh.consume("chat", handler)
            chat = new_envelope("CHAT", "from mqtt", source=Source("sensor-1", "main"), to=cfg.instance_id)
            await asyncio.to_thread(_mqtt_publish, mqtt_port, f"nxs/chat/{cfg.instance_id}/_all", encode(chat))
            assert (await mesh.publish("CHAT", "from ws", to=cfg.instance_id)).seq == 2
            await eventually(lambda: len(got) == 2, what="both chats delivered over the websocket")
        assert got == [("sensor-1", "from mqtt"), (cfg.instance_id, "from ws")]
    finally:
        srv.stop()


def _mqtt_publish(port: int, topic: str, body: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique_id("m"))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, body, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_render_refuses_a_plaintext_listener_off_loopback_naming_it(tmp_path: Path):
    out = str(tmp_path / "out")
    r = nxs(None, "deploy", "render", "--host", "n1=100.64.0.1", "--websocket", "8080", "--out", out)
    assert r.exit_code == 1
    assert "--websocket: the websocket listener on 0.0.0.0:8080 would run without TLS" in r.stderr
    r = nxs(None, "deploy", "render", "--host", "n1=100.64.0.1", "--listen", "tailscale", "--mqtt", "1883",
            "--out", out)
    assert r.exit_code == 1 and "--mqtt: the mqtt listener on 100.64.0.1:1883" in r.stderr
    r = nxs(None, "deploy", "render", "--host", "n1=100.64.0.1", "--mqtt", "4222", "--out", out)
    assert r.exit_code == 1 and "every listener needs its own port" in r.stderr
    r = nxs(None, "deploy", "render", "--host", "n1=100.64.0.1", "--websocket", "127.0.0.1:8080", "--mqtt",
            "127.0.0.1:1883", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["hosts"][0]["listeners"] == {"websocket": "ws://127.0.0.1:8080",
                                                            "mqtt": "mqtt://127.0.0.1:1883"}


def test_secure_render_gives_the_websocket_mutual_tls_and_mqtt_to_devices_only(tmp_path: Path):
    sec = tmp_path / "sec"
    init_identities(sec, [HOST])
    opts = _opts(tmp_path, secure_dir=str(sec), websocket="8443")
    text = render_config(HOST, [HOST], opts)
    block = text[text.index("websocket {"):]
    block = block[:block.index("\n}\n")]
    assert "no_tls" not in block and "verify: true" in block and "pinned_certs: [" in block
    assert str(sec / "nodes" / "n1" / "node.pem") in block
    conf = tmp_path / "secure.conf"
    conf.write_text(text)
    check_config(conf)
    with pytest.raises(ConfigError, match="^--mqtt: .* has no device identities, so no MQTT client could connect"):
        render_config(HOST, [HOST], _opts(tmp_path, secure_dir=str(sec), mqtt="8883"))
    init_identities(sec, [HOST], devices=["sensor-1"])
    text = render_config(HOST, [HOST], _opts(tmp_path, secure_dir=str(sec), mqtt="8883"))
    mqtt_block = text[text.index("mqtt {"):]
    mqtt_block = mqtt_block[:mqtt_block.index("\n}\n")]
    trust = json.loads((sec / "trust.json").read_text())
    assert "verify_and_map: true" in mqtt_block and "no_tls" not in mqtt_block
    assert f'pinned_certs: ["{trust["devices"]["sensor-1"]["cert_sha256"]}"]' in mqtt_block  # devices only
    assert '{"user": "nxs-device:sensor-1", "permissions": {"publish": {"allow": ["nxs.heartbeat.sensor-1", ' \
           '"nxs.status.sensor-1", "nxs.result.*"]}, "subscribe": {"allow": ["nxs.command.sensor-1.>", ' \
           '"nxs.command.sensor-1"]}}, "allowed_connection_types": ["MQTT"]}' in text
    conf.write_text(text)
    check_config(conf)
    # Plain TLS (--tls-cert/--tls-key) is enough for a listener off loopback too.
    node = sec / "nodes" / "n1"
    tls = _opts(tmp_path, tls_cert=str(node / "node.pem"), tls_key=str(node / "node.key"), websocket="0.0.0.0:8443",
                mqtt="0.0.0.0:8883")
    conf.write_text(render_config(HOST, [HOST], tls))
    check_config(conf)
    assert conf.read_text().count("cert_file") == 3  # the client port, the websocket and the mqtt listener


def test_up_refuses_listeners_it_cannot_serve(tmp_path: Path):
    store = str(tmp_path / "s")
    r = nxs(None, "up", "--host", "0.0.0.0", "--mqtt", str(free_port()), "--store", store)
    assert r.exit_code == 1 and "--mqtt: the mqtt listener on 0.0.0.0" in r.stderr and "--secure" in r.stderr
    r = nxs(None, "up", "--secure", "--mqtt", str(free_port()), "--port", str(free_port()), "--store", store)
    assert r.exit_code == 1 and "has no device identities" in r.stderr and "--device ID" in r.stderr
    r = nxs(None, "up", "--mqtt", str(free_port()), "--device", "sensor-1", "--store", store)
    assert r.exit_code == 2 and "--device" in r.stderr and "for --secure" in r.stderr
    r = nxs(None, "up", "--cluster", "2", "--websocket", str(free_port()), "--store", store)
    assert r.exit_code == 2 and "--websocket" in r.stderr
    same = str(free_port())
    r = nxs(None, "up", "--port", same, "--mqtt", same, "--store", store)
    assert r.exit_code == 2 and f"{same} is taken by another listener" in r.stderr


def test_up_serves_websocket_and_mqtt_clients(tmp_path: Path):
    port, ws_port, mqtt_port = free_port(), free_port(), free_port()
    proc = Proc("up", "--port", str(port), "--monitor-port", str(free_port()), "--websocket", str(ws_port),
                "--mqtt", str(mqtt_port), cwd=tmp_path)
    try:
        proc.wait_line("listening", timeout=30)
        out = "".join(proc.out)
        assert f"websocket clients: --url ws://127.0.0.1:{ws_port}" in out
        assert f"MQTT clients: mqtt://127.0.0.1:{mqtt_port}" in out
        beat = new_envelope("HEARTBEAT", {"epoch": "e1", "seq": 1}, source=Source("sensor-1", "main"), ttl=0)
        _mqtt_publish(mqtt_port, "nxs/heartbeat/sensor-1", encode(beat))
        r = nxs(f"ws://127.0.0.1:{ws_port}", "nodes", "--json")  # the CLI itself over the websocket
        assert r.exit_code == 0, r.output
        assert [n["node"] for n in json.loads(r.stdout)] == ["sensor-1"]
        assert proc.stop(signal.SIGINT) == 0
    finally:
        proc.kill()


async def test_up_secure_serves_a_mesh_identity_over_wss_and_refuses_a_stranger(tmp_path: Path):
    port, ws_port = free_port(), free_port()
    proc = Proc("up", "--secure", "--node", "n1", "--port", str(port), "--monitor-port", str(free_port()),
                "--websocket", str(ws_port), cwd=tmp_path)
    try:
        await asyncio.to_thread(proc.wait_line, "listening", 30)
        url = f"wss://127.0.0.1:{ws_port}"
        assert f"websocket clients: --url {url}" in "".join(proc.out)
        node_toml = tmp_path / ".nxs" / "secure" / "nodes" / "n1" / "nxs.toml"
        cfg, _ = load_config({"servers": url}, config_file=node_toml, env={})
        async with Mesh(cfg, ensure=False) as mesh:
            assert mesh.connected_url == url
            ack = await mesh.publish("CHAT", "over wss with an nkey", to="n1")
            assert ack.seq >= 1 and not ack.duplicate
        # Trusting the server is not enough: no client certificate, or no nkey, is refused at connect.
        for stranger, why in ((cfg.replace(tls_cert=None, tls_key=None, connect_timeout=2.0), "CERTIFICATE_REQUIRED"),
                              (cfg.replace(nkey_seed=None, creds=None, secure=False, connect_timeout=2.0),
                               "Authorization Violation")):
            with pytest.raises(ConnectError, match=why):
                await Mesh(stranger, ensure=False).connect()
        assert await asyncio.to_thread(proc.stop, signal.SIGINT) == 0
    finally:
        proc.kill()


def test_up_secure_serves_an_mqtt_device_over_mqtts(tmp_path: Path):
    port, mqtt_port = free_port(), free_port()
    proc = Proc("up", "--secure", "--node", "n1", "--device", "sensor-1", "--port", str(port), "--monitor-port",
                str(free_port()), "--mqtt", str(mqtt_port), cwd=tmp_path)
    try:
        proc.wait_line("listening", timeout=30)
        sec = tmp_path / ".nxs" / "secure"
        assert f"MQTT devices: mqtts://127.0.0.1:{mqtt_port} with their certificates in {sec}/devices/<id>/" \
            in "".join(proc.out)
        device = subprocess.Popen([sys.executable, str(ROOT / "examples" / "mqtt_device.py"), "--id", "sensor-1",
                                   "--port", str(mqtt_port), "--tls-dir", str(sec / "devices" / "sensor-1")],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert device.stdout is not None
            assert device.stdout.readline() == (
                f"sensor-1 on the mesh via mqtts://127.0.0.1:{mqtt_port}; try `nxs nodes`, `nxs cmd sensor-1 read`\n")
            r = nxs(None, "--config", str(sec / "nodes" / "n1" / "nxs.toml"), "cmd", "sensor-1", "read", "--json")
            assert r.exit_code == 0 and json.loads(r.stdout)["result"] == {"temperature_c": 21.5}, r.output
        finally:
            device.terminate()
            device.wait(30)
        assert proc.stop(signal.SIGINT) == 0
    finally:
        proc.kill()


NODE_DIR = ROOT / ".cache" / "node-client"  # npm's install, kept between runs


def _node_client() -> tuple[str, Path]:
    """node and a directory with @nats-io/nats-core installed (from npm, once), or a skip saying why."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("no node/npm on this machine: the Node.js example is not run")
    if not (NODE_DIR / "node_modules" / "@nats-io" / "nats-core").is_dir():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        (NODE_DIR / "package.json").write_text('{"private": true, "type": "module"}\n')
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "@nats-io/nats-core@3"], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.skip(f"npm install @nats-io/nats-core failed (registry unreachable?): {r.stderr[-300:]}")
    return node, NODE_DIR


def test_the_readme_node_client_is_the_example_file():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```js\n(.*?)^```", readme, re.S | re.M)
    assert blocks == [(ROOT / "examples" / "node_client.mjs").read_text()]


async def test_the_node_client_example_reaches_the_mesh_over_websocket(tmp_path: Path):
    node, where = _node_client()
    script = where / "node_client.mjs"  # beside its node_modules, where ESM imports resolve
    shutil.copyfile(ROOT / "examples" / "node_client.mjs", script)
    srv = NatsServer(store_dir=tmp_path / "nats", name=unique_id("ws"), websocket_port=-1).start()
    try:
        cfg = MeshConfig(servers=(srv.url,), instance_id=unique_id("n"), data_dir=str(tmp_path / "d"))
        async with Mesh(cfg) as mesh:
            flags = [] if _has_websocket(node) else ["--experimental-websocket"]  # Node.js 20
            proc = await asyncio.create_subprocess_exec(node, *flags, str(script), srv.ws_url, cfg.instance_id,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            assert out.decode() == "stored in NXS_CHAT as #1\n"
            stored = [r.envelope async for r in mesh.tail("chat")]
        assert [(e.source.instance_id, e.content) for e in stored if e] == [("node-client", "hello from Node.js")]
    finally:
        srv.stop()


def _has_websocket(node: str) -> bool:
    r = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"], timeout=30)
    return r.returncode == 0


async def test_the_edges_bench_measures_ws_against_tcp_in_one_run():
    from nxs_cli.bench import DEFAULT_SCENARIOS, BenchOptions, run_bench

    report = await run_bench(["edges"], BenchOptions(messages=50, rounds=1))
    rows = [r.as_dict() for r in report.rows]
    assert [(r["scenario"], r["metric"], r["skipped"]) for r in rows] == [
        ("ws publish -> handler", "p50 us", False), ("ws publish -> handler", "p99 us", False)]
    assert all(r["mesh"] > 0 and r["raw"] > 0 for r in rows) and "ws://" in rows[0]["note"]
    assert "edges" in DEFAULT_SCENARIOS  # seconds, not minutes: part of a plain `nxs bench`


def test_deploy_secure_init_adds_devices_show_lists_them_and_revoke_drops_them(tmp_path: Path):
    r = nxs(None, "deploy", "secure", "init", "sec", "--host", "n1=127.0.0.1", "--device", "sensor-1", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)["identities"]}
    assert rows["sensor-1"]["role"] == "device" and rows["sensor-1"]["sign"] is None
    dev = tmp_path / "sec" / "devices" / "sensor-1"
    assert sorted(p.name for p in dev.iterdir()) == ["ca.pem", "device.key", "device.pem"]
    assert (dev / "device.key").stat().st_mode & 0o077 == 0
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((dev / "device.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["nxs-device:sensor-1"]
    trust = json.loads((tmp_path / "sec" / "trust.json").read_text())
    assert set(trust["devices"]) == {"sensor-1"} and "sensor-1" not in trust["nodes"]
    r = nxs(None, "deploy", "secure", "show", "sec")
    assert r.exit_code == 0 and "device" in r.stdout and "(certificate)" in r.stdout
    for bad, why in (("n1", "already a node's"), ("a.b", "device"), ("admin", "already a node's")):
        r = nxs(None, "deploy", "secure", "init", "sec", "--device", bad)
        assert r.exit_code == 1 and "--device" in r.stderr and why in r.stderr, (bad, r.stderr)
    out = str(tmp_path / "out")
    r = nxs(None, "deploy", "render", "--secure", "sec", "--host", "n1=127.0.0.1", "--listen", "tailscale",
            "--mqtt", "8883", "--out", out)
    assert r.exit_code == 0, r.output
    assert '"user": "nxs-device:sensor-1"' in (tmp_path / "out" / "n1.conf").read_text()
    r = nxs(None, "deploy", "secure", "rotate", "sec", "sensor-1")
    assert r.exit_code == 1 and "is a device" in r.stderr and "--device sensor-1" in r.stderr
    r = nxs(None, "deploy", "secure", "revoke", "sec", "sensor-1")
    assert r.exit_code == 0 and "MQTT listener (nats-server does not reload MQTT settings)" in r.stderr, r.output
    after = json.loads((tmp_path / "sec" / "trust.json").read_text())
    assert after["devices"] == {} and after["revoked"][-1]["cert_sha256"] == trust["devices"]["sensor-1"]["cert_sha256"]
    r = nxs(None, "deploy", "render", "--secure", "sec", "--host", "n1=127.0.0.1", "--listen", "tailscale",
            "--mqtt", "8883", "--out", out)
    assert r.exit_code == 1 and "has no device identities" in r.stderr
