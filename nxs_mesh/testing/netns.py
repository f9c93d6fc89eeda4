"""Test hosts in Linux network namespaces: each with its own 100.64.x.y address, joined by a bridge.

    with NetnsLab(3) as lab:                 # needs root and iproute2
        lab.hosts[0].address                 # "100.64.<s>.1"
        lab.cut(lab.hosts[0])                # link down: a partition
        lab.heal(lab.hosts[0])
        run_in_netns(lab.hosts[1].ns, some_coroutine_function)   # this process, inside host 2

Layout: a hub namespace holds bridge ``br0``; each host namespace has ``eth0`` (a veth whose peer is
a bridge port in the hub). Nothing is created in the caller's own namespace, and the addresses only
exist inside the lab, so no traffic leaves it. Names carry a random suffix, so parallel runs never
collide; ``close()`` (also on errors, also from a fixture finalizer) deletes every namespace, which
removes the veths with them.

``python -m nxs_mesh.testing.netns agent ...`` is a small publishing client for these tests: run it
with ``ip netns exec``; it prints one JSON line per publish and a status line as things change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["NetnsHost", "NetnsLab", "netns_unavailable", "run_in_netns"]

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


def netns_unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the netns tests as root, e.g. in CI)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed: apt-get install -y iproute2"
    probe = f"nxs-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot create a network namespace here: {exc}"
    with contextlib.suppress(RuntimeError):
        _ip("netns", "del", probe)
    return None


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def veth_to_bridge(host_ns: str, ifname: str, cidr: str, bridge_ns: str, bridge: str, port: str) -> None:
    """A veth pair: ``ifname`` in ``host_ns`` (up, with ``cidr``) and its peer ``port`` on ``bridge``
    in ``bridge_ns``: how a test host joins a LAN."""
    _ip("link", "add", ifname, "netns", host_ns, "type", "veth", "peer", "name", port, "netns", bridge_ns)
    _ip("-n", bridge_ns, "link", "set", port, "master", bridge)
    _ip("-n", bridge_ns, "link", "set", port, "up")
    _ip("-n", host_ns, "addr", "add", cidr, "dev", ifname)
    _ip("-n", host_ns, "link", "set", ifname, "up")


@dataclass(frozen=True)
class NetnsHost:
    name: str  # short name, e.g. h1
    ns: str  # namespace name
    address: str  # 100.64.s.i

    def exec_argv(self, *argv: str) -> list[str]:
        """``argv`` run inside this host."""
        return ["ip", "netns", "exec", self.ns, *argv]


class NetnsLab:
    """``size`` hosts on one virtual LAN 100.64.<subnet>.0/24, each in its own namespace."""

    def __init__(self, size: int = 3, *, prefix: str = "nxs") -> None:
        self.tag = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.subnet = random.randint(1, 254)
        self.hub = f"{self.tag}-hub"
        self.hosts = [
            NetnsHost(f"h{i}", f"{self.tag}-h{i}", f"100.64.{self.subnet}.{i}") for i in range(1, size + 1)
        ]
        self._created: list[str] = []

    def __repr__(self) -> str:
        return f"<NetnsLab {self.tag} [{', '.join(h.address for h in self.hosts)}]>"

    def start(self) -> NetnsLab:
        try:
            self._add_ns(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for i, h in enumerate(self.hosts, 1):
                self._add_ns(h.ns)
                _ip("-n", h.ns, "link", "set", "lo", "up")
                veth_to_bridge(h.ns, "eth0", f"{h.address}/24", self.hub, "br0", f"p{i}")
        except BaseException:
            self.close()
            raise
        return self

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)

    def cut(self, host: NetnsHost) -> None:
        """Partition ``host`` from the others (its link goes down; its processes keep running)."""
        _ip("-n", host.ns, "link", "set", "eth0", "down")

    def heal(self, host: NetnsHost) -> None:
        _ip("-n", host.ns, "link", "set", "eth0", "up")

    def close(self) -> None:
        """Delete every namespace this lab made (veths go with them). Safe to call twice."""
        while self._created:
            name = self._created.pop()
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip("netns", "del", name)

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_in_netns(ns: str, fn: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
    """Run ``asyncio.run(fn())`` in a thread that has joined namespace ``ns`` (the caller stays where it
    is: setns(2) on a thread affects that thread only). Sockets it opens live in ``ns``; processes it
    starts inherit ``ns``."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({ns}) failed")
            finally:
                os.close(fd)
            result.append(asyncio.run(_as_coroutine(fn)))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"run_in_netns({ns}) still running after {timeout}s")
    if error:
        raise error[0]
    return result[0]


async def _as_coroutine(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


# -- the publishing agent (run inside a namespace) --------------------------------------------------------
async def _agent(args: argparse.Namespace) -> None:
    from nxs_mesh.client.mesh import Mesh
    from nxs_mesh.config import MeshConfig

    cfg = MeshConfig(servers=tuple(args.servers.split(",")), instance_id=args.id, replicas=args.replicas,
                     connect_timeout=1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stdin() -> None:  # any line, or EOF: stop publishing, drain, report, exit
        sys.stdin.readline()
        loop.remove_reader(sys.stdin.fileno())
        stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)

    def emit(doc: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"t": time.time(), **doc}) + "\n")
        sys.stdout.flush()

    async with Mesh(cfg, ensure=False, outbox=args.outbox) as mesh:
        mesh.publish_timeout = args.publish_timeout
        assert mesh.outbox is not None and mesh.flusher is not None
        emit({"ready": True, "path": mesh.server_path})
        last: tuple[int, str] = (-1, "")
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = await mesh.publish("CHAT", {"from": args.id, "i": i}, to=args.to)
                emit({"id": r.message_id, "queued": r.queued})
            except Exception as exc:  # not acknowledged
                emit({"error": f"{type(exc).__name__}: {exc}"})
            now = (len(mesh.outbox), mesh.server_path)
            if now != last:
                emit({"outbox": now[0], "path": now[1]})
                last = now
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.interval)
            if not len(mesh.outbox) and last[0] > 0:
                emit({"outbox": 0, "path": mesh.server_path, "drain_s": mesh.flusher.last_drain_s})
                last = (0, mesh.server_path)
        drained = await mesh.flusher.wait_empty(timeout=args.drain_timeout)
        emit({"done": True, "outbox": len(mesh.outbox), "drained": drained})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nxs_mesh.testing.netns")
    sub = parser.add_subparsers(dest="cmd", required=True)
    agent = sub.add_parser("agent", help="publish CHAT messages until stdin closes or says anything")
    agent.add_argument("--servers", required=True)
    agent.add_argument("--id", required=True)
    agent.add_argument("--to", required=True)
    agent.add_argument("--outbox", required=True)
    agent.add_argument("--interval", type=float, default=0.05)
    agent.add_argument("--replicas", type=int, default=3)
    agent.add_argument("--publish-timeout", type=float, default=2.0)
    agent.add_argument("--drain-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    asyncio.run(_agent(args))


if __name__ == "__main__":
    main()
