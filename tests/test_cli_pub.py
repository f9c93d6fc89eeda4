"""`nxs pub` at its edges: content that is not UTF-8 text, and no server to take the message.

Real subprocesses where the process boundary matters (argv and stdin carry bytes, not text), Typer's
CliRunner elsewhere; every server is a real nats-server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nxs_mesh.transport.server import NatsServer, free_port

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


def test_pub_with_no_server_says_where_the_message_waits_and_the_command_it_names_sends_it(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    """Not stored is not success: exit 75 (EX_TEMPFAIL), one line naming the outbox file and the command
    that sends it; the message is kept, and that very command stores it once the server is back."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    r = run_nxs(clean_env, tmp_path, "--url", url, "pub", "chat", "--to", "n2", "kept", "--json")
    assert r.returncode == 75, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    box = tmp_path / "data" / "outbox-pub-node.sqlite"
    assert doc["queued"] and doc["seq"] is None and doc["outbox"] == str(box)
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("not stored: message") and "cannot reach" in line and str(box) in line, line
    assert "--id pub-node" in line, line  # ... and which worker would send it as well
    shown = run_nxs(clean_env, tmp_path, "outbox", "--json")
    assert json.loads(shown.stdout)["messages"] == 1

    refused = run_nxs(clean_env, tmp_path, "--url", url, "pub", "chat", "x", "--no-queue")
    assert refused.returncode == 1 and "nxs up" in refused.stderr
    plain = run_nxs(clean_env, tmp_path, "--url", url, "pub", "chat", "--to", "n2", "second")
    assert plain.returncode == 75 and plain.stdout == "", plain.stdout

    found = re.search(r"`(nxs [^`]* outbox flush [^`]*)`", line)
    assert found is not None, line
    send = shlex.split(found.group(1))
    with NatsServer(port=port, store_dir=tmp_path / "back", name="back"):
        assert run_nxs(clean_env, tmp_path, "--url", url, "init").returncode == 0
        other_dir = tmp_path / "elsewhere"  # the command works from any directory
        other_dir.mkdir()
        sent = run_nxs(clean_env, other_dir, *send[1:])
        assert sent.returncode == 0, (sent.stdout, sent.stderr)
        stored = run_nxs(clean_env, tmp_path, "--url", url, "tail", "chat", "--json").stdout.splitlines()
        assert [json.loads(x)["message_id"] for x in stored][0] == doc["message_id"]
        assert [json.loads(x)["payload"]["content"] for x in stored] == ["kept", "second"]
