"""`nxs gateway` as a user runs it: the README's curl example as written, serving until SIGTERM, and
one-line errors for what it refuses."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nxs_mesh.transport.server import NatsServer

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
NXS = str(BIN / "nxs")


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NXS_")}
    return {**env, "NXS_URL": url, "HOME": str(tmp_path), "PATH": f"{BIN}:{env.get('PATH', '')}",
            "NXS_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readme_block() -> str:
    section = README.split("## HTTP gateway", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert found, "the README's HTTP gateway section has a bash block"
    return found.group(1)


def test_the_readme_curl_example_runs_as_written(nats_server: NatsServer, tmp_path: Path):
    """The block runs in bash from a directory holding README.md; only the port is swapped for a free one
    (8080 may be taken on a shared machine)."""
    script = _readme_block().replace("8080", str(_free_port()))
    (tmp_path / "README.md").write_text(README)
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env=_env(tmp_path, nats_server.url), timeout=80)
    out = r.stdout
    assert '"status":"ok"' in out, out + r.stderr
    acks = re.findall(r'\{"message_id":"[^"]+","stream":"NXS_CHAT","seq":(\d+),"duplicate":(true|false)\}', out)
    assert len(acks) == 2 and acks[0][0] == acks[1][0] and [d for _, d in acks] == ["false", "true"], out
    assert '"content":"hello over HTTP"' in out and '"count":1' in out, out
    assert re.search(rf"^id: {acks[0][0]}$", out, re.M) and "\ndata: {" in out, out  # the SSE event
    assert f'"size":{len(README.encode())}' in out, out
    assert (tmp_path / "copy.md").read_text() == README
    assert "Traceback" not in r.stderr, r.stderr


def _start(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the gateway says where it listens (or exits)
    found = re.search(r"gateway listening on (http://\S+) ", line)
    if not found:
        proc.kill()
        raise AssertionError(f"no listening line: {line!r} {proc.communicate()[1]}")
    return proc, found.group(1)


def test_nxs_gateway_serves_until_sigterm_and_exits_cleanly(nats_server: NatsServer, tmp_path: Path):
    env = _env(tmp_path, nats_server.url)
    proc, url = _start([NXS, "gateway", "--listen", "127.0.0.1:0", "--cors", "https://a.example"], env, tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/v1/health").json()["status"] == "ok"
            ack = client.post("/v1/messages", json={"type": "CHAT", "to": "n2", "content": "hi"}).json()
            got = client.get("/v1/messages", params={"kind": "chat", "since": ack["seq"]}).json()
            assert got["messages"][0]["envelope"]["source"]["instance_id"] == "gateway"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.communicate()[1]
    assert "Traceback" not in err, err


@pytest.mark.parametrize("args,tokens,message", [
    (["--listen", "0.0.0.0:0"], None, "without --tokens"),
    (["--listen", "127.0.0.1:0", "--tokens", "missing.toml"], None, "missing.toml"),
    (["--listen", "127.0.0.1:0", "--tokens", "t.toml"], '[[token]]\ntoken = "short"\nidentity = "n1"\n', "16 characters"),
    (["--listen", "127.0.0.1:0", "--tokens", "t.toml"], '[[token]]\ntoken = "0123456789abcdefg"\n', "identity"),
    (["--listen", "127.0.0.1:0", "--tokens", "t.toml"], "[[token]\n", "tokens"),
    (["--listen", "127.0.0.1:0", "--console", "nowhere"], None, "not a directory"),
    (["--url", "nats://127.0.0.1:1", "--listen", "127.0.0.1:0"], None, "cannot reach"),
])
def test_nxs_gateway_refusals_are_one_line(tmp_path: Path, args: list[str], tokens: str | None, message: str):
    if tokens is not None:
        (tmp_path / "t.toml").write_text(tokens)
    r = subprocess.run([NXS, "gateway", *args], capture_output=True, text=True, cwd=tmp_path,
                       env=_env(tmp_path, "nats://127.0.0.1:1"), timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
