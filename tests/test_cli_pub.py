"""`nxs pub` at its edges: content that is not UTF-8 text, and no server to take the message.

Real subprocesses where the process boundary matters (argv and stdin carry bytes, not text), Typer's
CliRunner elsewhere; every server is a real nats-server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nxs_mesh.transport.server import NatsServer

NXS = [sys.executable, "-c", "from nxs_cli.app import main; main()"]


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a child `nxs`: no NXS_* settings of the machine, a temp HOME and data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NXS_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "NXS_DATA_DIR": str(tmp_path / "data"), "NXS_INSTANCE_ID": "pub-node"}


def run_nxs(env: dict[str, str], cwd: Path, *args: str | bytes, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """Arguments may be bytes (as a shell passes them); the output is read as UTF-8, whatever it holds."""
    r = subprocess.run([*NXS, *args], input=stdin, capture_output=True, env=env, cwd=cwd, timeout=30)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="backslashreplace"),
                                       r.stderr.decode(errors="backslashreplace"))


def _stored(env: dict[str, str], cwd: Path, url: str) -> list[str]:
    out = run_nxs(env, cwd, "--url", url, "tail", "chat", "--json")
    return [json.loads(line)["payload"]["content"] for line in out.stdout.splitlines()]


def test_pub_refuses_content_that_is_not_utf8_naming_the_field(
    nats_server: NatsServer, clean_env: dict[str, str], tmp_path: Path
) -> None:
    url = nats_server.url
    assert run_nxs(clean_env, tmp_path, "--url", url, "init").returncode == 0
    cases = {
        # argv: the shell hands Python bytes, which it decodes with surrogateescape (os.fsencode gives them back)
        "argv": (("pub", "chat", "--to", "n2", os.fsencode("caf\udce9")), b"", "payload.content"),
        "stdin": (("pub", "chat", "--to", "n2", "-"), b"caf\xe9\n", "payload.content"),
        "json": (("pub", "chat", "--json-content", os.fsencode('{"a": ["\udcff"]}')), b"", "payload.content"),
        "meta": (("pub", "chat", "ok", "--meta", os.fsencode("who=\udcff")), b"", "payload.metadata.who"),
    }
    for name, (args, stdin, field) in cases.items():
        r = run_nxs(clean_env, tmp_path, "--url", url, *args, stdin=stdin)
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
        assert field in r.stderr and "UTF-8" in r.stderr, (name, r.stderr)
    assert "0xe9" in run_nxs(clean_env, tmp_path, "--url", url, "pub", "chat", "-", stdin=b"caf\xe9").stderr
    assert _stored(clean_env, tmp_path, url) == []  # nothing half-sent
    ok = run_nxs(clean_env, tmp_path, "--url", url, "pub", "chat", "-", stdin="café ✓\n".encode())
    assert ok.returncode == 0, ok.stderr
    assert _stored(clean_env, tmp_path, url) == ["café ✓"]
