"""`nxs doctor`'s security checks: an open listener off loopback, key files others can read, certificates
near expiry; each against a real server (the off-loopback one in a network namespace, 100.64.x.y)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.node.checkup import check_mesh
from nxs_mesh.node.security_checkup import security_checks
from nxs_mesh.testing.netns import NetnsLab, netns_unavailable, run_in_netns
from nxs_mesh.testing.secure import SecureCluster
from nxs_mesh.transport.server import NatsServer


def _rows(report) -> dict[str, tuple[str, str]]:
    return {c.name: (c.level, c.detail) for c in report.checks}


async def test_open_loopback_is_fine_and_key_files_are_checked(nats_server: NatsServer, tmp_path: Path):
    key = tmp_path / "node.nk"
    key.write_text("not really a seed")
    os.chmod(key, 0o644)
    async with Mesh(MeshConfig(servers=(nats_server.url,), instance_id="chk", data_dir=str(tmp_path))) as mesh:
        rows = _rows(await check_mesh(mesh))
        assert rows["access"][0] == "ok" and "loopback only" in rows["access"][1]
        assert rows["key files"][0] == "ok"
        mesh_with_key = mesh.config.replace(nkey_seed=str(key))
        info = mesh.server_info()
    rows2 = {n: (lvl, d) for n, lvl, d in security_checks(mesh_with_key, info, nats_server.url)}
    assert rows2["key files"][0] == "warn" and str(key) in rows2["key files"][1] and "0o644" in rows2["key files"][1]


def test_an_open_listener_off_loopback_is_a_warning(tmp_path: Path):
    if reason := netns_unavailable():
        pytest.skip(reason)
    with NetnsLab(1) as lab:
        host = lab.hosts[0]
        srv = NatsServer(host=host.address, port=4222, monitor_port=8222, store_dir=tmp_path / "s", netns=host.ns)
        srv.start()
        try:
            async def check() -> dict[str, tuple[str, str]]:
                cfg = MeshConfig(servers=(f"nats://{host.address}:4222",), instance_id="chk", data_dir=str(tmp_path))
                async with Mesh(cfg) as mesh:
                    return _rows(await check_mesh(mesh))

            rows = run_in_netns(host.ns, check, timeout=30)
        finally:
            srv.stop()
    assert rows["access"][0] == "warn" and "without credentials" in rows["access"][1]


async def test_a_secure_server_passes_and_expiry_is_reported(tmp_path: Path):
    with SecureCluster(tmp_path / "c") as sc:
        async with Mesh(sc.config("admin")) as mesh:
            rows = _rows(await check_mesh(mesh))
            assert rows["access"] == ("ok", f"{mesh.connected_url} requires TLS client certificates and credentials")
            assert rows["key files"][0] == "ok"
            assert rows["certificates"][0] == "ok"
            later = dt.datetime.now(dt.UTC) + dt.timedelta(days=380)
            rows2 = {n: (lvl, d) for n, lvl, d in security_checks(mesh.config, mesh.server_info(),
                                                                   mesh.connected_url, now=later)}
            assert rows2["certificates"][0] == "warn" and "rotate it" in rows2["certificates"][1]
            gone = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
            rows3 = {n: (lvl, d) for n, lvl, d in security_checks(mesh.config, mesh.server_info(),
                                                                   mesh.connected_url, now=gone)}
            assert rows3["certificates"][0] == "fail" and "expired" in rows3["certificates"][1]
