"""The secure mode from the CLI: `nxs up --secure`, `nxs deploy secure init|show|rotate|revoke`,
`nxs deploy render --secure` (configs nats-server accepts), and what a user sees when refused."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

from test_cli_core import Proc, _isolated, nxs  # noqa: F401 - _isolated is an autouse fixture

from nxs_mesh.transport.server import free_port, port_is_free


def test_up_secure_serves_identities_and_refuses_what_a_node_may_not_do(tmp_path: Path) -> None:
    port = free_port()
    proc = Proc("up", "--secure", "--node", "n1", "--node", "n2", "--port", str(port),
                "--monitor-port", str(free_port()), cwd=tmp_path)
    try:
        line = proc.wait_line("listening", timeout=30)
        assert f"tls://127.0.0.1:{port}" in line
        out = "".join(proc.out)
        assert "secure mode" in out and "consumer command-n1 created" in out
        sec = tmp_path / ".nxs" / "secure"
        n1, admin = str(sec / "nodes" / "n1" / "nxs.toml"), str(sec / "admin" / "nxs.toml")
        r = nxs(None, "--config", n1, "pub", "chat", "--to", "n2", "hello", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["seq"] == 1
        r = nxs(None, "--config", n1, "dlq", "purge", "--yes")
        assert r.exit_code == 1
        assert "permission denied" in r.stderr and "$JS.API.STREAM.PURGE.NXS_DLQ" in r.stderr
        r = nxs(None, "--config", admin, "dlq", "purge", "--yes")
        assert r.exit_code == 0, r.output
        r = nxs(f"tls://127.0.0.1:{port}", "--instance-id", "stranger", "tail", "chat", "--last", "1")
        assert r.exit_code != 0 and "CERTIFICATE_VERIFY_FAILED" in r.stderr
        assert proc.stop(signal.SIGINT) == 0
        assert port_is_free("127.0.0.1", port)
    finally:
        proc.kill()


def test_up_without_secure_says_it_is_open(tmp_path: Path) -> None:
    proc = Proc("up", "--port", str(free_port()), "--monitor-port", str(free_port()), cwd=tmp_path)
    try:
        proc.wait_line("listening")
        assert proc.stop(signal.SIGINT) == 0
        assert "open mode: no authentication" in proc.stderr()
    finally:
        proc.kill()


def test_deploy_secure_init_render_rotate_revoke(tmp_path: Path) -> None:
    hosts = ["--host", "n1=100.64.0.1", "--host", "n2=100.64.0.2", "--host", "n3=100.64.0.3"]
    r = nxs(None, "deploy", "secure", "init", "sec", *hosts, "--install-dir", "/etc/nxs", "--json")
    assert r.exit_code == 0, r.output
    names = {i["name"]: i for i in json.loads(r.stdout)["identities"]}
    assert set(names) == {"n1", "n2", "n3", "admin"}
    for key in Path("sec").rglob("*"):
        if key.suffix in (".key", ".nk"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert 'nkey_seed = "/etc/nxs/node.nk"' in Path("sec/nodes/n1/nxs.toml").read_text()
    again = nxs(None, "deploy", "secure", "init", "sec", *hosts, "--json")  # idempotent: keys kept
    assert {i["name"]: i["sign"] for i in json.loads(again.stdout)["identities"]} == \
        {n: i["sign"] for n, i in names.items()}

    r = nxs(None, "deploy", "render", "--secure", "sec", "--install-dir", "/etc/nxs", *hosts, "-o", "out", "--json")
    assert r.exit_code == 0, r.output  # --check: nats-server -t accepts every config
    conf = Path("out/n1.conf").read_text()
    assert "verify: true" in conf and "pinned_certs" in conf and names["n2"]["sign"] in conf
    assert 'cert_file: "/etc/nxs/node.pem"' in conf and "tls://100.64.0.2:6222" in conf
    assert "NXS_URL=tls://127.0.0.1:4222" in Path("out/n1.env").read_text()

    r = nxs(None, "deploy", "secure", "rotate", "sec", "n2", "--host", "n2=100.64.0.2", "--json")
    assert r.exit_code == 0, r.output
    rotated = {i["name"]: i for i in json.loads(r.stdout)["identities"]}
    assert rotated["n2"]["sign"] != names["n2"]["sign"] and rotated["n1"]["sign"] == names["n1"]["sign"]
    r = nxs(None, "deploy", "secure", "revoke", "sec", "n3", "--json")
    assert {i["name"] for i in json.loads(r.stdout)["identities"]} == {"n1", "n2", "admin"}
    hosts2 = hosts[:4]
    assert nxs(None, "deploy", "render", "--secure", "sec", *hosts2, "-o", "out2").exit_code == 0
    conf = Path("out2/n1.conf").read_text()
    assert names["n3"]["sign"] not in conf and names["n2"]["sign"] not in conf
    assert rotated["n2"]["sign"] in conf and names["n3"]["cert_sha256"] not in conf
    trust = json.loads(Path("sec/trust.json").read_text())
    assert {r["name"] for r in trust["revoked"]} == {"n2", "n3"}


def test_deploy_secure_errors_are_one_line(tmp_path: Path) -> None:
    r = nxs(None, "deploy", "secure", "revoke", "nowhere", "n1")
    assert r.exit_code == 1 and "trust_file" in r.stderr and "Traceback" not in r.output
    assert nxs(None, "deploy", "secure", "init", "sec", "--host", "n1=100.64.0.1").exit_code == 0
    r = nxs(None, "deploy", "render", "--secure", "sec", "--host", "n1=100.64.0.1", "--host", "n9=100.64.0.9")
    assert r.exit_code == 1 and "n9 has no identity" in r.stderr
    r = nxs(None, "deploy", "secure", "revoke", "sec", "n5")
    assert r.exit_code == 1 and "'n5' is not a trusted node" in r.stderr
