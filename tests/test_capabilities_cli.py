"""`nxs grant issue` / `show`, and a CLI command carrying the token ($NXS_GRANT) to a secure node."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from nxs_mesh import MeshConfig
from nxs_mesh.node.node import Node, NodeOptions
from nxs_mesh.testing.keys import write_mesh_keys

NXS = [sys.executable, "-c", "from nxs_cli.app import main; main()"]
FAST = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False)


async def test_grant_issue_show_and_use(tmp_path: Path, mesh_config: MeshConfig, nats_server):
    keys = write_mesh_keys(tmp_path / "sec", ["worker", "bob"])
    base = {k: v for k, v in os.environ.items() if not k.startswith("NXS_")}

    def env_of(node: str, **extra: str) -> dict[str, str]:
        d = keys.node_dir(node)
        return {**base, "HOME": str(tmp_path), "NXS_DATA_DIR": str(tmp_path / "data"), "NXS_INSTANCE_ID": node,
                "NXS_URL": nats_server.url, "NXS_NKEY_SEED": str(d / "node.nk"),
                "NXS_TRUST_FILE": str(keys.trust_file), "NXS_SECURE": "true", **extra}

    def nxs(node: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NXS, *args], capture_output=True, text=True, env=env_of(node, **extra),
                              cwd=tmp_path, timeout=60)

    issued = nxs("admin", "grant", "issue", "--sub", "bob", "--allow", "sleep", "--node", "worker", "--ttl", "60",
                 "--json")
    assert issued.returncode == 0, issued.stderr
    token = json.loads(issued.stdout)["token"]
    shown = nxs("bob", "grant", "show", token, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["allow"] == ["sleep"]
    forged = nxs("bob", "grant", "issue", "--sub", "bob", "--allow", "*")  # bob's key is not the admin's
    bad = nxs("bob", "grant", "show", forged.stdout.strip())
    assert bad.returncode == 1 and "not signed by the admin key" in bad.stderr and "Traceback" not in bad.stderr
    async with Node(keys.config(mesh_config, "worker"), FAST):
        # (in a thread: the node runs on this event loop)
        refused = await asyncio.to_thread(nxs, "bob", "cmd", "worker", "sleep", "0")
        assert refused.returncode != 0 and "not authorized" in refused.stdout + refused.stderr
        allowed = await asyncio.to_thread(nxs, "bob", "cmd", "worker", "sleep", "0", "--json", NXS_GRANT=token)
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert "slept" in allowed.stdout
