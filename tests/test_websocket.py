"""WebSocket URLs work, and a failure names its cause (issue 10, item 7).

The relay path of DESIGN.md section 7 is a WebSocket endpoint; nats-server's own ``websocket`` block
is the listener here, on loopback with a random port.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nxs_mesh.client.mesh import Mesh
from nxs_mesh.config import MeshConfig
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer, free_port
from nxs_mesh.wire.errors import ConnectError


@pytest.fixture
def ws_server(tmp_path: Path):
    with NatsServer(store_dir=tmp_path / "nats", name=unique_id("ws"), websocket_port=-1) as srv:
        yield srv


def _config(url: str, tmp_path: Path, *more: str) -> MeshConfig:
    return MeshConfig(servers=(url, *more), instance_id=unique_id("ws"), data_dir=str(tmp_path / "d"),
                      connect_timeout=1.0)


async def test_a_mesh_over_ws_publishes_and_consumes(ws_server: NatsServer, tmp_path: Path):
    assert ws_server.ws_url == f"ws://127.0.0.1:{ws_server.websocket_port}"
    assert ws_server.websocket_port != ws_server.port
    cfg = _config(ws_server.ws_url, tmp_path)
    got: list[str] = []

    async def handler(env):
        got.append(env.content)

    async with Mesh(cfg) as mesh:
        assert mesh.connected_url == ws_server.ws_url
        await mesh.consume("chat", handler)
        ack = await mesh.publish("CHAT", "over websocket", to=cfg.instance_id)
        assert ack.seq == 1 and not ack.duplicate
        await eventually(lambda: got == ["over websocket"], what="delivery over the websocket")
        reply = await mesh.publish("CHAT", "again", to=cfg.instance_id, message_id=ack.message_id)
        assert reply.duplicate  # JetStream's dedup works through the websocket as well


async def test_the_websocket_relay_listed_last_is_used_when_the_tcp_servers_are_down(
    ws_server: NatsServer, tmp_path: Path
):
    down = f"nats://127.0.0.1:{free_port()}"
    async with Mesh(_config(down, tmp_path, ws_server.ws_url)) as mesh:
        # A member's own WebSocket listener: still a mesh member (JetStream in its INFO), so "peer"; only a
        # server without JetStream reached over a leafnode is the relay (tests/test_relay.py).
        assert mesh.connected_url == ws_server.ws_url and mesh.server_path == "peer"
        assert (await mesh.publish("CHAT", "via relay", to="n2")).seq == 1
    # With the local server up, the listed order wins: local first, the relay stays the fallback.
    async with Mesh(_config(ws_server.url, tmp_path, ws_server.ws_url)) as mesh:
        assert mesh.server_path == "local" and mesh.connected_url == ws_server.url


async def test_ws_to_a_port_that_speaks_plain_nats_names_the_cause(ws_server: NatsServer, tmp_path: Path):
    url = f"ws://127.0.0.1:{ws_server.port}"  # the client port, not the websocket one
    with pytest.raises(ConnectError) as exc:
        await Mesh(_config(url, tmp_path)).connect()
    text = str(exc.value)
    assert "not a WebSocket listener" in text and f"nats://127.0.0.1:{ws_server.port}" in text
    assert "is the mesh running" not in text


async def test_ws_to_a_closed_port_says_so(tmp_path: Path):
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError) as exc:
        await Mesh(_config(url, tmp_path)).connect()
    assert url in str(exc.value) and "refused" in str(exc.value).lower()


def test_ws_without_aiohttp_is_a_config_error_naming_it(tmp_path: Path):
    # A real interpreter in which `import aiohttp` fails, as on an install that lacks it.
    (tmp_path / "aiohttp.py").write_text("raise ImportError('No module named aiohttp')\n")
    script = textwrap.dedent("""
        import asyncio
        from nxs_mesh.config import MeshConfig
        from nxs_mesh.transport.connection import connect
        from nxs_mesh.wire.errors import ConfigError
        try:
            asyncio.run(connect(MeshConfig(servers=("ws://127.0.0.1:9",), instance_id="x")))
        except ConfigError as exc:
            print("ConfigError", exc.setting, exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.stdout.startswith("ConfigError servers"), out.stdout + out.stderr
    assert "aiohttp" in out.stdout and "pip install" in out.stdout
