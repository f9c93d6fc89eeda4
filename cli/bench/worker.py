"""Running ``nxs node run`` workers as child processes, and reading the server's connection stats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from nxs_mesh.transport.server import terminate

__all__ = ["Worker", "connz", "node_connections", "rss_bytes", "worker_available"]

_CLI = "from nxs_cli.app import main; main()"
NOT_AVAILABLE = "worker not available (`nxs node run` is missing)"


def worker_available() -> bool:
    """True when this install has the node worker (``nxs node run --help`` succeeds)."""
    try:
        done = subprocess.run([sys.executable, "-c", _CLI, "node", "run", "--help"],
                              capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class Worker:
    """One ``nxs node run`` process. ``kill()`` is the crash case (SIGKILL); ``stop()`` is SIGTERM."""

    def __init__(self, url: str, instance_id: str, *, extra_args: tuple[str, ...] = ()) -> None:
        self.url, self.instance_id, self.extra_args = url, instance_id, extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"nxs-bench-{instance_id}-", suffix=".log", delete=False)

    def __repr__(self) -> str:
        return f"<Worker {self.instance_id} pid={self.pid} {'running' if self.running else 'stopped'}>"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Worker:
        env = {**os.environ, "NXS_URL": self.url, "NXS_INSTANCE_ID": self.instance_id}
        argv = [sys.executable, "-c", _CLI, "--url", self.url, "--instance-id", self.instance_id,
                "node", "run", *self.extra_args]
        self._proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        return self

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def kill(self) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            terminate(self._proc, timeout)

    def cleanup(self) -> None:
        self.stop()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc/<pid>/status (VmRSS, in kB there)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def connz(monitor_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{monitor_url}/connz?subs=0&limit=1024", timeout=5) as resp:
        data = json.loads(resp.read())
    return list(data.get("connections") or [])


async def node_connections(monitor_url: str, instance_id: str) -> list[dict[str, Any]]:
    """The server's view of a node's connections: client names start with ``nxs:<instance_id>``."""
    conns = await asyncio.to_thread(connz, monitor_url)
    return [c for c in conns if str(c.get("name", "")).startswith(f"nxs:{instance_id}")]
