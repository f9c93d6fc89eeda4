"""A secure three-server cluster for tests, rendered exactly as ``nxs deploy render --secure`` does.

    with SecureCluster(tmp_path) as sc:          # n1..n3 on 127.0.0.1..3, mTLS, nkeys, permissions
        cfg = sc.config("n1")                  # n1's MeshConfig from its rendered nxs.toml
        admin = sc.config("admin")

    with SecureCluster(tmp_path, size=1, devices=["sensor-1"]) as sc:   # + an mqtts:// listener
        host, port = sc.mqtt_address                                    # sc.device_files("sensor-1")

Each server binds its own loopback address (127.0.0.1, .2, .3: all of 127/8 is loopback on Linux),
so the three share one set of ports as three hosts would; nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from nxs_mesh.config import MeshConfig, load_config
from nxs_mesh.deploy.identity import ADMIN, SecureLayout, init_identities, load_trust
from nxs_mesh.deploy.render import DeployOptions, check_config, render_config
from nxs_mesh.deploy.tailscale import MeshHost, parse_host_flag
from nxs_mesh.transport.server import NatsServer, port_is_free

__all__ = ["DeviceFiles", "SecureCluster"]


class DeviceFiles(NamedTuple):
    ca: str
    cert: str
    key: str


def _shared_free_port(addresses: list[str]) -> int:
    for _ in range(200):
        port = random.randint(20000, 60000)
        if all(port_is_free(a, port) for a in addresses):
            return port
    raise RuntimeError("no port free on every test address")


class SecureCluster:
    def __init__(self, base: Path, size: int = 3, *, devices: Sequence[str] = ()) -> None:
        self.base = Path(base)
        self.addresses = [f"127.0.0.{i + 1}" for i in range(size)]
        self.hosts: list[MeshHost] = [parse_host_flag(f"n{i + 1}={a}") for i, a in enumerate(self.addresses)]
        self.layout = SecureLayout(self.base / "secure")
        self.devices = tuple(devices)
        ports = [_shared_free_port(self.addresses) for _ in range(4)]
        self.opts = DeployOptions(client_port=ports[0], cluster_port=ports[1], monitor_port=ports[2],
                                  listen="tailscale", secure_dir=str(self.layout.root),
                                  mqtt=str(ports[3]) if self.devices else None)
        self.servers: list[NatsServer] = []

    @property
    def urls(self) -> list[str]:
        return [f"tls://{a}:{self.opts.client_port}" for a in self.addresses]

    @property
    def mqtt_address(self) -> tuple[str, int]:
        """The first server's ``mqtts://`` listener (only with ``devices``)."""
        if self.opts.mqtt is None:
            raise RuntimeError("no MQTT listener: give SecureCluster(devices=[...])")
        return self.addresses[0], int(self.opts.mqtt)

    def device_files(self, device: str) -> DeviceFiles:
        """The CA, certificate and key an MQTT device connects with."""
        d = self.layout.device_dir(device)
        return DeviceFiles(str(d / "ca.pem"), str(d / "device.pem"), str(d / "device.key"))

    def render(self) -> list[Path]:
        """(Re)write every server's config from the secure directory (after a rotate or revoke too)."""
        out = self.base / "conf"
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        trusted = set(load_trust(self.layout.trust)["nodes"]) if self.layout.trust.exists() else set()
        members = [h for h in self.hosts if h.name in trusted or not trusted]
        for host in members:  # one store per host, as on separate machines
            opts = dataclasses.replace(self.opts, store_dir=str(self.base / host.name))
            path = out / f"{host.name}.conf"
            path.write_text(render_config(host, members, opts))
            check_config(path)
            paths.append(path)
        return paths

    def start(self) -> SecureCluster:
        init_identities(self.layout.root, self.hosts, devices=self.devices)
        paths = self.render()
        for host, path in zip(self.hosts, paths, strict=True):
            addr = host.ipv4 or "127.0.0.1"
            self.servers.append(NatsServer(host=addr, port=self.opts.client_port, store_dir=self.base / host.name,
                                           name=host.name, config_file=path, jetstream=False))
        try:
            for srv in self.servers:
                srv.start()
            for srv in self.servers:
                srv.wait_healthy(30)
        except BaseException:
            self.stop()
            raise
        return self

    def reload(self) -> None:
        """Re-render and make every server reload its config (SIGHUP), as deploy does after a revoke."""
        paths = {p.stem for p in self.render()}
        for srv in self.servers:
            if srv.name in paths:
                srv.reload()
            else:  # a revoked host's server leaves the cluster too
                srv.stop()

    def restart(self) -> None:
        """Re-render and restart every server: what a change to the MQTT listener needs (a revoked device's
        pin), since nats-server refuses to reload MQTT settings ("config reload not supported for MQTT")."""
        self.render()
        for srv in self.servers:
            srv.stop()
        for srv in self.servers:
            srv.start()
        for srv in self.servers:
            srv.wait_healthy(30)

    def config(self, name: str, **overrides: object) -> MeshConfig:
        """The MeshConfig an identity gets from its nxs.toml, pointed at this cluster."""
        toml = self.layout.node_dir(name) / "nxs.toml"
        cfg, _ = load_config({"servers": ",".join(self.urls)}, config_file=toml, env={})
        extra = {"instance_id": "admin-cli"} if name == ADMIN else {}
        return cfg.replace(connect_timeout=2.0, data_dir=str(self.base / f"data-{name}"), **{**extra, **overrides})

    def stop(self) -> None:
        for srv in self.servers:
            with contextlib.suppress(Exception):
                srv.stop()

    def __enter__(self) -> SecureCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.base / "conf", ignore_errors=True)
