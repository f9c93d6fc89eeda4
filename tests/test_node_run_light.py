"""`nxs node run` loads what `python -m nxs_mesh.node.worker` loads: no typer, rich, pydantic, and no
aiohttp, PyNaCl or cryptography for a plain nats:// mesh (issue 14, item 5). Figures: `nxs bench footprint`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from node_support import NXS, run_cli, wait_state
from nxs_cli.node_fast import worker_argv

from nxs_mesh import Mesh
from nxs_mesh.node.worker import _parser
from nxs_mesh.testing import unique_id
from nxs_mesh.transport.server import NatsServer

# What the CLI's long-running worker must not carry (nor the library worker).
HEAVY = ("typer", "rich", "click", "pydantic", "pydantic_core", "cryptography", "aiohttp", "nacl", "nkeys")

PROBE = '''
import sys
from nxs_mesh.node.handlers import Registry

registry = Registry()


@registry.command("modules")
async def modules(args):
    return sorted({name.split(".")[0] for name in sys.modules})
'''


def _start(argv: list[str], tmp_path: Path, node: str) -> subprocess.Popen[bytes]:
    (tmp_path / "rss_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "NXS_DATA_DIR": str(tmp_path / f"data-{node}")}
    log = (tmp_path / f"{node}.log").open("ab")
    try:
        return subprocess.Popen([*argv, "--handlers", "rss_probe:registry", "--no-plugins", "--heartbeat", "0.2"],
                                stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=tmp_path)
    finally:
        log.close()


async def _modules(url: str, node: str) -> set[str]:
    code, out, err = await run_cli(url, "cmd", node, "modules", "--json")
    assert code == 0, err
    return set(json.loads(out)["result"])


@pytest.mark.timeout(90)
async def test_nxs_node_run_loads_what_the_library_worker_loads(mesh: Mesh, nats_server: NatsServer,
                                                               tmp_path: Path):
    url = nats_server.url
    cli_node, lib_node = unique_id("light-cli"), unique_id("light-lib")
    procs = [
        # Global options before `node run`, as the bench's footprint worker passes them.
        _start([*NXS, "--url", url, "--instance-id", cli_node, "node", "run", "--location", "test"], tmp_path, cli_node),
        _start([sys.executable, "-m", "nxs_mesh.node.worker", "--url", url, "--id", lib_node], tmp_path, lib_node),
    ]
    try:
        status = await wait_state(mesh, cli_node, "running")
        assert status["location"] == "test"
        await wait_state(mesh, lib_node, "running")
        cli_mods, lib_mods = await _modules(url, cli_node), await _modules(url, lib_node)
    finally:
        for proc in procs:
            proc.terminate()
        assert [proc.wait(20) for proc in procs] == [0, 0]  # SIGTERM drains and exits 0 on both entries
    assert {"nxs_mesh", "nats", "msgspec"} <= cli_mods
    assert [m for m in HEAVY if m in cli_mods] == []
    assert [m for m in HEAVY if m in lib_mods] == []
    assert cli_mods - lib_mods <= {"nxs_cli"}


def test_node_run_help_is_the_cli_help_and_every_option_is_the_workers():
    done = subprocess.run([*NXS, "node", "run", "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"}, check=False)
    assert done.returncode == 0, done.stderr
    options: set[str] = set()
    for line in done.stdout.splitlines():  # an option line starts with its flags: "--doctor / --no-doctor  ..."
        for word in line.split():
            if word == "/":
                continue
            if not word.startswith("-"):
                break
            options.update(o for o in word.strip(",").split("/") if o.startswith("--"))
    expected = {"--id", "--location", "--config", "--handlers", "--capability", "--heartbeat", "--dead-after",
                "--grace", "--task-ack-wait", "--doctor", "--no-doctor", "--plugins", "--no-plugins", "--log-level"}
    assert expected <= options, done.stdout
    known = set(_parser("nxs node run")._option_string_actions)
    assert options - {"--help"} <= known  # whatever the help offers, the fast path accepts


def test_global_options_map_onto_the_worker_and_anything_else_falls_back_to_typer():
    assert worker_argv(["--url", "nats://a:1", "-s=nats://b:2", "--id", "g", "--config", "f.toml", "--debug",
                        "node", "run", "--id", "mine", "-C", "x"]) == [
        "--url", "nats://a:1", "--url", "nats://b:2", "--id", "g", "--config", "f.toml", "--debug",
        "--id", "mine", "-C", "x"]
    assert worker_argv(["--instance-id=n1", "--agent-id", "ag", "node", "run"]) == ["--id", "n1", "--agent-id", "ag"]
    for typer_handles in (["node", "run", "--help"], ["node", "run", "-h"], ["--version", "node", "run"],
                          ["node", "status"], ["node"], ["--url"], ["--unknown", "node", "run"]):
        assert worker_argv(typer_handles) is None, typer_handles


def test_node_run_usage_and_config_errors_are_one_line_without_traceback(tmp_path: Path):
    done = subprocess.run([*NXS, "node", "run", "--heartbeat", "often"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "--heartbeat" in done.stderr and "often" in done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[mesh]\nservers = ["nats://127.0.0.1:1"]\n[node]\nheartbeat_intervall = 1\n')
    done = subprocess.run([*NXS, "--config", str(bad), "node", "run"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "heartbeat_intervall" in done.stderr


@pytest.mark.timeout(60)
def test_aiohttp_loads_only_for_a_websocket_url(tmp_path: Path):
    srv = NatsServer(store_dir=tmp_path / "nats", name=unique_id("ws"), websocket_port=-1).start()
    code = textwrap.dedent(f"""
        import asyncio, sys
        from nxs_mesh import Mesh, MeshConfig
        assert "aiohttp" not in sys.modules, "imported with the library"

        async def main():
            cfg = MeshConfig(servers=({srv.url!r},), instance_id="tcp-only", data_dir={str(tmp_path / "a")!r})
            async with Mesh(cfg) as mesh:
                await mesh.publish("CHAT", "tcp", to="tcp-only")
            assert "aiohttp" not in sys.modules, "loaded for a nats:// URL"
            import nats  # nats-py used directly (after the library) still speaks WebSocket
            nc = await nats.connect({srv.ws_url!r}, allow_reconnect=False)
            assert "aiohttp" in sys.modules
            await nc.flush()
            await nc.close()
            cfg = cfg.replace(servers=({srv.ws_url!r},), data_dir={str(tmp_path / "b")!r})
            async with Mesh(cfg) as mesh:
                assert mesh.connected_url == {srv.ws_url!r}
                ack = await mesh.publish("CHAT", "ws", to="tcp-only")
            assert "aiohttp" in sys.modules
            print("ok", ack.seq)

        asyncio.run(main())
    """)
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=45, check=False)
    finally:
        srv.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "2"]
