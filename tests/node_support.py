"""Helpers for the node/doctor/task/CLI tests: real worker processes, status and result lookups.

(No tests here; named test_* only so it sits with the files it serves.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from nxs_mesh import Mesh
from nxs_mesh.testing import eventually
from nxs_mesh.wire.envelope import Envelope

# Short timings so the scenarios run in seconds; the defaults (1 s / 5 s) behave the same, slower.
HB = 0.2
DEAD_AFTER = 1.0

NXS = [sys.executable, "-c", "from nxs_cli.app import main; main()"]


class Worker:
    """One `nxs node run` process; its stderr log goes to a file for assertions and post-mortems."""

    def __init__(self, url: str, node_id: str, log_dir: Path, *extra: str, heartbeat: float = HB,
                 dead_after: float = DEAD_AFTER) -> None:
        self.node_id = node_id
        self.log_path = log_dir / f"{node_id}.log"
        self.argv = [*NXS, "--url", url, "node", "run", "--id", node_id, "--location", "test",
                     "--heartbeat", str(heartbeat), "--dead-after", str(dead_after), "--no-plugins", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1",
                                          "NXS_DATA_DIR": str(self.log_path.parent / f"data-{self.node_id}")})
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        proc = self.proc
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with _suppress():
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


async def last_status(mesh: Mesh, node: str) -> dict[str, Any] | None:
    rec = await mesh.last("status", f"nxs.status.{node}")
    content = rec.envelope.content if rec is not None and rec.envelope is not None else None
    return content if isinstance(content, dict) else None


async def wait_state(mesh: Mesh, node: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        st = await last_status(mesh, node)
        return st if st and st.get("state") == state else None

    return await eventually(check, timeout=timeout, interval=0.05, what=f"{node} {state}")


async def results_for(mesh: Mesh, correlation_id: str) -> list[Envelope]:
    return [r.envelope for r in [rec async for rec in mesh.tail("result", filters=[f"nxs.result.{correlation_id}"])]
            if r.envelope is not None]


async def alerts_about(mesh: Mesh, node: str) -> list[dict[str, Any]]:
    out = []
    async for rec in mesh.tail("alert", filters=[f"nxs.alert.{node}"]):
        if rec.envelope is not None:
            out.append(rec.envelope.content)
    return out


async def run_cli(url: str, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *NXS, "--url", url, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
