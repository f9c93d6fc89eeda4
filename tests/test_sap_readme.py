"""The README's "Use it from the Synadia agent SDK" section as written: examples/sap_node.py serves
"helper", examples/sap_client.py (the unmodified SDK) and `nxs prompt` ask it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nxs_mesh.testing import eventually
from nxs_mesh.transport.server import NatsServer

ROOT = Path(__file__).resolve().parent.parent
NXS = str(Path(sys.executable).parent / "nxs")


@pytest.mark.timeout(90)
def test_the_readme_sap_examples_run(nats_server: NatsServer, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NXS_")}, "NXS_URL": nats_server.url,
           "NXS_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    node = subprocess.Popen([sys.executable, str(ROOT / "examples" / "sap_node.py")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def helper_serves() -> bool:  # `nxs agents --sap` as the README shows it
            assert node.poll() is None, node.stdout.read() if node.stdout else ""
            listed = subprocess.run([NXS, "agents", "--sap", "--json"], env=env, cwd=ROOT, capture_output=True,
                                    text=True, timeout=30)
            return '"agent":"helper"' in listed.stdout

        asyncio.run(eventually(helper_serves, timeout=40, interval=0.2, what="helper discoverable"))
        client = subprocess.run([sys.executable, str(ROOT / "examples" / "sap_client.py")], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=30)
        assert (client.returncode, client.stdout) == (0, "thinking... you said: hello\n"), client.stderr
        cli = subprocess.run([NXS, "prompt", "helper", "hello"], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=30)
        assert (cli.returncode, cli.stdout) == (0, "thinking... you said: hello\n"), cli.stderr
        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == 0
    finally:
        if node.poll() is None:
            node.kill()
        out = node.communicate()[0]
    assert "Traceback" not in out, out
