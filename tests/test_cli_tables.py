"""Tables at the widths people use: ids are never cut, narrow terminals wrap or drop the less important
columns, piped output is plain text.

Each command runs as a real process: once with its stdout in a pseudo-terminal of 80 or 100 columns
(what Rich sees in a terminal window), once piped. The nodes are published from the contract (STATUS and
HEARTBEAT envelopes) and the dead letter comes from a real consumer, all on a real nats-server.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import nats
import pytest

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.testing import eventually
from nxs_mesh.transport.server import NatsServer

NXS = [sys.executable, "-c", "from nxs_cli.app import main; main()"]
NODES = ("demo-node-001", "demo-node-002", "nxs-node-singapore-gpu-0001")
_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>])")
_BOX = set("┏┓┗┛┃━┡┩╇┳┻│─┌┐└┘├┤┬┴┼╭╮╰╯")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NXS_") and k not in ("COLUMNS", "LINES")}
    return {**env, "HOME": str(tmp_path), "NXS_DATA_DIR": str(tmp_path / "data"), "TERM": "xterm-256color"}


def in_terminal(argv: list[str], env: dict[str, str], columns: int, timeout: float = 30.0) -> str:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal ``columns`` wide; the text it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"{argv} still running after {timeout}s: {b''.join(chunks)!r}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return _ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def piped(argv: list[str], env: dict[str, str], columns: int | None = None) -> str:
    extra = {"COLUMNS": str(columns)} if columns else {}
    r = subprocess.run(argv, capture_output=True, text=True, env={**env, **extra}, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


async def _publish_nodes(url: str) -> None:
    for i, node in enumerate(NODES):
        cfg = MeshConfig(servers=(url,), instance_id=node, location="vps-singapore-east-1")
        async with Mesh(cfg) as mesh:
            common = {"epoch": f"e{i}", "state": "running"}
            await mesh.publish("STATUS", {**common, "location": cfg.location, "version": "0.1.0",
                                          "server": "nats://100.64.12.34:4222", "heartbeat_interval": 1.0,
                                          "dead_after": 3600.0, "load": 0.25})
            await mesh.publish("HEARTBEAT", {**common, "seq": 1, "interval": 1.0, "inflight": 0})


async def _dead_letter(url: str) -> None:
    node = "nxs-node-singapore-gpu-0001"
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        async with Mesh(MeshConfig(servers=(url,), instance_id=node)) as mesh:
            await mesh.consume("chat", lambda env: None, agent="main")
            await js.publish(f"nxs.chat.{node}.main", b"{not json at all, a preview that is long enough to matter")

            async def dead() -> bool:
                return (await js.stream_info("NXS_DLQ")).state.messages == 1

            await eventually(dead, what="the garbage message in NXS_DLQ")
    finally:
        await nc.close()


@pytest.fixture
def populated(nats_server: NatsServer) -> str:
    asyncio.run(_publish_nodes(nats_server.url))
    asyncio.run(_dead_letter(nats_server.url))
    return nats_server.url


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


@pytest.mark.timeout(120)
def test_node_ids_are_never_cut_in_a_terminal_or_piped(populated: str, tmp_path: Path) -> None:
    env = _env(tmp_path)
    nodes = [*NXS, "--url", populated, "nodes"]
    for shown in (in_terminal(nodes, env, 80), in_terminal(nodes, env, 100), piped(nodes, env, 80), piped(nodes, env)):
        for node in NODES:
            assert len(_lines_with(shown, node)) == 1, (node, shown)  # whole, on one line
        assert "running" in shown and "…" not in shown, shown
    plain = piped(nodes, env, 80)
    assert not _BOX & set(plain), plain  # piped: plain text, no box drawing
    wide = piped(nodes, env, 200)
    assert "nats://100.64.12.34:4222" in wide and "vps-singapore-east-1" in wide  # room: every column whole
    top = in_terminal([*NXS, "--url", populated, "top", "--iterations", "1", "--interval", "0.1"], env, 80)
    for node in NODES:
        assert _lines_with(top, node), (node, top)


@pytest.mark.timeout(120)
def test_dlq_list_keeps_the_id_and_the_reason_at_80_columns_and_piped(populated: str, tmp_path: Path) -> None:
    env = _env(tmp_path)
    dlq = [*NXS, "--url", populated, "dlq", "list"]
    for shown in (in_terminal(dlq, env, 80), in_terminal(dlq, env, 100), piped(dlq, env, 80), piped(dlq, env)):
        header = next(line for line in shown.splitlines() if "subject" in line)
        assert re.match(r"\W*id\b", header) and "reason" in header, shown
        row = next(line for line in shown.splitlines() if "nxs.chat." in line or re.match(r"\W*1\b", line))
        assert re.match(r"\W*1\s", row), shown  # the id `nxs dlq replay` needs, whole
        assert "JSON" in shown, shown  # the reason, wrapped if it must be
        assert "…" not in shown.split("preview")[0], shown
    assert not _BOX & set(piped(dlq, env, 80))


def test_outbox_and_deploy_tables_keep_ids_whole_at_80_columns(tmp_path: Path) -> None:
    from nxs_mesh.transport.server import free_port

    env = {**_env(tmp_path), "NXS_INSTANCE_ID": "nxs-node-singapore-gpu-0001"}
    dead = f"nats://127.0.0.1:{free_port()}"
    queued = subprocess.run([*NXS, "--url", dead, "pub", "chat", "--to", "nxs-node-frankfurt-0002", "x", "--json"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert queued.returncode == 75, queued.stderr
    message_id = json.loads(queued.stdout)["message_id"]
    for shown in (in_terminal([*NXS, "outbox"], env, 80), piped([*NXS, "outbox"], env, 80)):
        assert len(_lines_with(shown, message_id)) == 1, shown
        assert "nxs.chat." in shown and "age" in shown, shown  # the subject may fold; it is there
    hosts = [f"nxs-node-singapore-gpu-000{i}=100.64.0.{i}" for i in (1, 2, 3)]
    render = [*NXS, "deploy", "render", "--out", str(tmp_path / "gen"), "--no-check",
              *[arg for h in hosts for arg in ("--host", h)]]
    for shown in (in_terminal(render, env, 80), piped(render, env, 80)):
        for i in (1, 2, 3):
            assert _lines_with(shown, f"nxs-node-singapore-gpu-000{i}"), shown
            assert _lines_with(shown, f"100.64.0.{i}"), shown
