"""`nxs deploy render`: configs from flags and from a realistic `tailscale status --json`, each accepted by
`nats-server -t`, and a rendered three-host config actually forming a cluster (on loopback)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from nxs_cli.app import app
from typer.testing import CliRunner

from nxs_mesh.deploy.render import DeployOptions, check_config, render, write_configs
from nxs_mesh.deploy.tailscale import hosts_from_status, load_status, parse_host_flag
from nxs_mesh.transport.server import NatsServer, free_port
from nxs_mesh.wire.errors import ConfigError, ServerError

# Shaped like `tailscale status --json` (1.6x): Self tagged, tagged peers online and offline, an untagged
# laptop, a peer with two tags, IPv4 + IPv6 addresses, trailing dots on DNS names, a shared device.
TAILSCALE_STATUS = {
    "Version": "1.66.4-t5a5a4b0f8-g1c2d3e4f5",
    "TUN": True,
    "BackendState": "Running",
    "AuthURL": "",
    "TailscaleIPs": ["100.101.0.1", "fd7a:115c:a1e0::1"],
    "Self": {
        "ID": "nF1xSelf1CNTRL", "PublicKey": "nodekey:aa01", "HostName": "alpha",
        "DNSName": "alpha.tail4c2e.ts.net.", "OS": "linux", "UserID": 1001,
        "TailscaleIPs": ["100.101.0.1", "fd7a:115c:a1e0::1"], "Tags": ["tag:nxs", "tag:server"],
        "Online": True, "ExitNode": False, "Active": False, "Relay": "fra",
    },
    "Health": [],
    "MagicDNSSuffix": "tail4c2e.ts.net",
    "CurrentTailnet": {"Name": "example.org", "MagicDNSSuffix": "tail4c2e.ts.net", "MagicDNSEnabled": True},
    "Peer": {
        "nodekey:bb02": {
            "ID": "nB2peer2CNTRL", "HostName": "bravo", "DNSName": "bravo.tail4c2e.ts.net.", "OS": "linux",
            "TailscaleIPs": ["100.101.0.2", "fd7a:115c:a1e0::2"], "Tags": ["tag:nxs"], "Online": True,
            "CurAddr": "192.0.2.10:41641", "Relay": "fra", "RxBytes": 1234, "TxBytes": 4321,
        },
        "nodekey:cc03": {
            "ID": "nC3peer3CNTRL", "HostName": "charlie-box", "DNSName": "charlie.tail4c2e.ts.net.",
            "OS": "linux", "TailscaleIPs": ["fd7a:115c:a1e0::3", "100.101.0.3"], "Tags": ["tag:server", "tag:nxs"],
            "Online": True,
        },
        "nodekey:dd04": {  # tagged but offline: still a member, its routes are retried
            "ID": "nD4peer4CNTRL", "HostName": "delta", "DNSName": "delta.tail4c2e.ts.net.", "OS": "linux",
            "TailscaleIPs": ["100.101.0.4", "fd7a:115c:a1e0::4"], "Tags": ["tag:nxs"], "Online": False,
            "LastSeen": "2024-06-01T10:00:00Z",
        },
        "nodekey:ee05": {  # a laptop: no tags
            "ID": "nE5peer5CNTRL", "HostName": "Jane's MacBook", "DNSName": "janes-macbook.tail4c2e.ts.net.",
            "OS": "macOS", "TailscaleIPs": ["100.101.0.5", "fd7a:115c:a1e0::5"], "Online": True,
        },
        "nodekey:ff06": {  # IPv6-only mesh host
            "ID": "nF6peer6CNTRL", "HostName": "echo", "DNSName": "echo.tail4c2e.ts.net.", "OS": "linux",
            "TailscaleIPs": ["fd7a:115c:a1e0::6"], "Tags": ["tag:nxs"], "Online": True,
        },
        "nodekey:gg07": {  # a shared-in device with another tag
            "ID": "nG7peer7CNTRL", "HostName": "ci-runner", "DNSName": "ci-runner.other.ts.net.", "OS": "linux",
            "TailscaleIPs": ["100.101.0.7"], "Tags": ["tag:ci"], "Online": True, "ShareeNode": True,
        },
    },
    "User": {"1001": {"ID": 1001, "LoginName": "ops@example.org", "DisplayName": "Ops"}},
}


def test_hosts_from_tailscale_status_select_by_tag() -> None:
    hosts = hosts_from_status(load_status(json.dumps(TAILSCALE_STATUS)), tag="tag:nxs")
    assert [h.name for h in hosts] == ["alpha", "bravo", "charlie", "delta", "echo"]
    alpha, bravo, charlie, delta, echo = hosts
    assert alpha.is_self and alpha.ipv4 == "100.101.0.1" and alpha.dns_name == "alpha.tail4c2e.ts.net"
    assert charlie.ipv4 == "100.101.0.3" and charlie.ipv6 == "fd7a:115c:a1e0::3"  # IPv6 listed first
    assert not delta.online
    assert echo.ipv4 is None and echo.address() == "[fd7a:115c:a1e0::6]"
    assert bravo.address("dns") == "bravo.tail4c2e.ts.net"
    online = hosts_from_status(TAILSCALE_STATUS, tag="tag:nxs", include_offline=False)
    assert "delta" not in [h.name for h in online]
    assert [h.name for h in hosts_from_status(TAILSCALE_STATUS, tag="tag:ci")] == ["ci-runner"]


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="tailscale status"):
        load_status('{"Peer": {}}')
    with pytest.raises(ConfigError, match="NAME=ADDRESS"):
        parse_host_flag("100.64.0.1")
    with pytest.raises(ConfigError, match="sync_interval"):
        DeployOptions(sync_interval="sometimes")
    with pytest.raises(ConfigError, match="duplicate"):
        render([parse_host_flag("a=100.64.0.1"), parse_host_flag("a=100.64.0.2")], DeployOptions())


@pytest.mark.parametrize("route_by", ["ip", "dns", "ipv6"])
def test_every_rendered_config_passes_nats_server_check(tmp_path: Path, route_by: str) -> None:
    hosts = hosts_from_status(TAILSCALE_STATUS, tag="tag:nxs")
    opts = DeployOptions(store_dir=str(tmp_path / "js"), route_by=route_by, sync_interval="always")
    paths = write_configs(hosts, tmp_path / "out", opts)
    assert len(paths) == 5
    for path in paths:
        check_config(path)
    alpha = (tmp_path / "out" / "alpha.conf").read_text()
    assert "sync_interval: always" in alpha and 'server_name: "alpha"' in alpha
    if route_by == "ip":
        assert 'advertise: "100.101.0.1:6222"' in alpha
        assert '"nats://100.101.0.2:6222"' in alpha and '"nats://[fd7a:115c:a1e0::6]:6222"' in alpha
        assert "100.101.0.1:6222\"\n  ]" not in alpha  # no route to itself
    elif route_by == "dns":
        assert '"nats://bravo.tail4c2e.ts.net:6222"' in alpha
    env = (tmp_path / "out" / "bravo.env").read_text()
    urls = next(line for line in env.splitlines() if line.startswith("NXS_URL=")).split("=", 1)[1].split(",")
    assert urls[0] == "nats://127.0.0.1:4222" and len(urls) == 5  # local first, then the 4 others


def test_render_with_tls_and_a_periodic_sync(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=nxs-test",
         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60,
    )
    hosts = [parse_host_flag(f"n{i}=100.64.0.{i}") for i in (1, 2, 3)]
    opts = DeployOptions(store_dir=str(tmp_path / "js"), sync_interval="2m", tls_cert=str(cert),
                         tls_key=str(key), tls_ca=str(cert), route_tls=True, relay="wss://relay.example.net:443")
    for path in write_configs(hosts, tmp_path / "out", opts):
        check_config(path)
    text = (tmp_path / "out" / "n2.conf").read_text()
    assert 'sync_interval: "2m"' in text and '"tls://100.64.0.1:6222"' in text and "verify: true" in text
    env = (tmp_path / "out" / "n2.env").read_text()
    assert env.rstrip().splitlines()[1].endswith(",wss://relay.example.net:443")
    # A broken file is reported with the server's own reason.
    bad = tmp_path / "bad.conf"
    bad.write_text(text.replace(str(key), str(tmp_path / "missing.pem")))
    with pytest.raises(ServerError, match="rejects"):
        check_config(bad)


def test_cli_render_from_stdin(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["deploy", "render", "--tailscale-status", "-", "--tag", "tag:nxs", "--out", str(tmp_path),
         "--store-dir", str(tmp_path / "js"), "--json"],
        input=json.dumps(TAILSCALE_STATUS),
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert [h["host"] for h in doc["hosts"]] == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert doc["offline"] == ["delta"] and all(h["checked"] for h in doc["hosts"])
    bad = CliRunner().invoke(app, ["deploy", "render", "--host", "nonsense", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "Traceback" not in bad.output


def test_rendered_configs_form_a_cluster(tmp_path: Path) -> None:
    """The rendered files run: three servers on loopback addresses 127.0.0.{1,2,3} with distinct ports."""
    hosts = [parse_host_flag(f"n{i}=127.0.0.{i}") for i in (1, 2, 3)]
    servers = []
    cluster_port = free_port()
    try:
        for h in hosts:
            opts = DeployOptions(cluster_name="render", client_port=free_port(), cluster_port=cluster_port,
                                 monitor_port=free_port(), store_dir=str(tmp_path / h.name), listen="tailscale",
                                 monitor_listen=h.ipv4 or "")
            conf = tmp_path / f"{h.name}.conf"
            conf.write_text(render(hosts, opts)[hosts.index(h)].config)
            check_config(conf)
            srv = NatsServer(host=h.ipv4 or "", port=opts.client_port, monitor_port=opts.monitor_port,
                             config_file=conf, store_dir=tmp_path / h.name, name=h.name, jetstream=False)
            servers.append(srv.start())
        for srv in servers:
            srv.wait_healthy(30)
    finally:
        for srv in servers:
            srv.stop()
