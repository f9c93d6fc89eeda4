"""The OpenClaw channel plugin (integrations/openclaw, TypeScript) passes its own suite.

That suite (``node --test``, integrations/openclaw/test/) runs against a real nats-server and this
project's Python mesh (test/peer.py uses nxs_mesh from this checkout): a CHAT handed over and acked
after, RESULT with the correlation id, one conversation per peer, the sender allowlist, redelivery after
a gateway killed before hand-over, secure mode (signatures both ways), the delegate/task tools. The only
stand-in is the dispatch function OpenClaw's SDK would call; tests/test_openclaw_gateway.py loads the
plugin in the real gateway.

``npm ci`` runs once (node_modules is kept, and reinstalled when package-lock.json changes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nxs_mesh.testing import unique_id
from nxs_mesh.transport.server import NatsServer, find_nats_server

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "integrations" / "openclaw"


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the OpenClaw plugin is TypeScript run by Node's test runner")
    return node, npm


def build_plugin(npm: str, env: dict[str, str] | None = None) -> None:
    """``npm ci`` when node_modules is missing or older than the lock file, then ``tsc`` into dist/."""
    lock, stamp = PLUGIN / "package-lock.json", PLUGIN / "node_modules" / ".package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PLUGIN, capture_output=True, text=True,
                           timeout=240, env=env)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
    r = subprocess.run([npm, "run", "--silent", "build"], cwd=PLUGIN, capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0, f"tsc failed:\n{r.stdout}\n{r.stderr}"


@pytest.mark.timeout(300)
def test_the_plugin_suite_passes_against_nats_and_the_python_mesh() -> None:
    node, npm = _tools()
    build_plugin(npm)
    env = {**os.environ, "NXS_PYTHON": sys.executable, "NXS_NATS_SERVER": find_nats_server()}
    tests = sorted(str(p.relative_to(PLUGIN)) for p in (PLUGIN / "test").glob("*.test.mjs"))
    r = subprocess.run([node, "--test", "--test-concurrency=1", "--test-reporter=tap", *tests], cwd=PLUGIN,
                       capture_output=True, text=True, timeout=240, env=env)
    report = r.stdout + r.stderr
    assert r.returncode == 0, report
    counts = {k: int(v) for k, v in re.findall(r"^# (pass|fail|skipped|cancelled) (\d+)$", r.stdout, re.M)}
    assert counts.get("fail") == 0 and counts.get("cancelled") == 0 and counts.get("skipped") == 0, report
    assert counts.get("pass", 0) >= 10, report  # every test ran (a file that silently loads nothing fails here)


@pytest.mark.timeout(120)
def test_the_readme_example_asks_a_gateway_and_prints_its_answer(nats_server: NatsServer, tmp_path: Path) -> None:
    """examples/openclaw.py (the README's) against the channel with an echoing agent: the RESULT's content."""
    node, npm = _tools()
    build_plugin(npm)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NXS_")}, "NXS_URL": nats_server.url,
           "OPENCLAW_INSTANCE": unique_id("gw"), "NXS_DATA_DIR": str(tmp_path / "data")}
    init = subprocess.run([sys.executable, str(PLUGIN / "test" / "peer.py"), "init", nats_server.url],
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    account = {"instanceId": env["OPENCLAW_INSTANCE"], "servers": [nats_server.url], "allowFrom": ["phone/*"]}
    gateway = subprocess.Popen([node, str(PLUGIN / "test" / "echo-gateway.mjs"), json.dumps(account)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert gateway.stdout is not None and gateway.stdout.readline().strip() == "consuming", gateway.stderr
        r = subprocess.run([sys.executable, str(ROOT / "examples" / "openclaw.py")], capture_output=True, text=True,
                           timeout=90, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip() == f"echo from {env['OPENCLAW_INSTANCE']}: What is on my calendar today?", r.stdout
    finally:
        gateway.terminate()
        assert gateway.wait(30) == 0
