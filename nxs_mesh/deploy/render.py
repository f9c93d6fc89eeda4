"""Render one nats-server config per mesh host (DESIGN.md section 7).

    hosts = [parse_host_flag("n1=100.64.0.1"), parse_host_flag("n2=100.64.0.2"), parse_host_flag("n3=100.64.0.3")]
    for path in write_configs(hosts, "out/", DeployOptions()):
        check_config(path)        # nats-server -t -c PATH

Each config has the cluster block with routes to the other members (Tailscale IPs or MagicDNS names),
``advertise`` set to the host's own Tailscale address, JetStream with ``sync_interval`` (default
``always``: every write is fsynced before it is acknowledged; the alternative, a periodic flush such
as ``2m``, is faster but a power loss on a quorum of hosts may drop acknowledged messages), the client
and monitoring ports, optional TLS, and optional WebSocket/MQTT listeners (``deploy.listeners``). Next to it an ``.env`` file holds the client server order for
that host (local first, the other members next, the relay last).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nxs_mesh.deploy.listeners import Kind, Listener, listener_block, parse_listener
from nxs_mesh.deploy.relay import (
    LEAF_PORT,
    Relay,
    hub_config,
    jetstream_domain,
    member_leaf_block,
    parse_relay,
)
from nxs_mesh.deploy.secure_conf import SecureRender, secure_render
from nxs_mesh.deploy.tailscale import MeshHost
from nxs_mesh.transport.connection import server_list
from nxs_mesh.transport.server import find_nats_server
from nxs_mesh.wire.errors import ConfigError, ServerError

__all__ = ["HUB_FILE", "DeployOptions", "RenderedHost", "check_config", "client_servers", "render", "render_config",
           "render_hub", "write_configs"]

#: The relay hub's config file, next to the hosts' (``--relay``).
HUB_FILE = "relay-hub.conf"
_SYNC_RE = re.compile(r"^(always|\d+(ms|s|m|h))$")


@dataclass(frozen=True)
class DeployOptions:
    cluster_name: str = "nxs"
    client_port: int = 4222
    cluster_port: int = 6222
    monitor_port: int = 8222
    store_dir: str = "/var/lib/nxs/jetstream"
    sync_interval: str = "always"
    route_by: str = "ip"  # ip | ipv6 | dns
    listen: str = "0.0.0.0"  # or "tailscale": bind client and route ports to the host's own address
    monitor_listen: str = "127.0.0.1"  # monitoring stays local unless asked
    max_file_store: str | None = None  # e.g. "20G"
    tls_cert: str | None = None  # client TLS (and routes, when route_tls)
    tls_key: str | None = None
    tls_ca: str | None = None
    route_tls: bool = False
    relay: str | None = None  # last entry of every client's server list (wss:// or tls://)
    secure_dir: str | None = None  # `--secure DIR`: mTLS + pinned certs + nkey users with least privilege
    install_dir: str | None = None  # where a node's secure directory lives on its host (default: DIR/nodes/<id>)
    websocket: str | None = None  # `--websocket [HOST:]PORT`: nats-server's WebSocket listener (deploy.listeners)
    mqtt: str | None = None  # `--mqtt [HOST:]PORT`: nats-server's MQTT listener

    def __post_init__(self) -> None:
        if not _SYNC_RE.match(self.sync_interval):
            raise ConfigError("sync_interval", f"{self.sync_interval!r}: use `always` or a duration like 2m, 10s")
        if self.route_by not in ("ip", "ipv6", "dns"):
            raise ConfigError("route_by", f"{self.route_by!r}: use ip, ipv6 or dns")
        for name in ("client_port", "cluster_port", "monitor_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(name, f"{port} is not a port number")
        if len({self.client_port, self.cluster_port, self.monitor_port}) != 3:
            raise ConfigError("ports", "client, cluster and monitoring ports must differ")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls", "--tls-cert and --tls-key go together")
        if self.secure_dir and self.tls_cert:
            raise ConfigError("tls", "--secure brings its own certificates; leave out --tls-cert/--tls-key")
        if self.route_tls and not self.tls_cert:
            raise ConfigError("tls", "route TLS needs --tls-cert/--tls-key")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.cluster_name):
            raise ConfigError("cluster_name", f"{self.cluster_name!r}: letters, digits, _ and - only")
        ports = [self.client_port, self.cluster_port, self.monitor_port, *(li.port for li in self.listeners)]
        if len(set(ports)) != len(ports):
            raise ConfigError("ports", f"every listener needs its own port: {ports}")
        if self.relay and self.secure_dir:
            raise ConfigError("--relay", "a relay hub for --secure (nkey credentials on the leafnode) is not "
                                         "rendered yet: leave out --relay or --secure")
        if self.relay:
            self.relay_hub  # noqa: B018 -- parse now: a bad --relay is an error before anything is written

    @property
    def relay_hub(self) -> Relay | None:
        """The relay asked for with ``--relay`` (``deploy.relay``), or None."""
        return parse_relay(self.relay, tls=bool(self.tls_cert)) if self.relay else None

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The WebSocket and MQTT listeners asked for (``--websocket``, ``--mqtt``)."""
        asked: tuple[tuple[Kind, str | None], ...] = (("websocket", self.websocket), ("mqtt", self.mqtt))
        return tuple(parse_listener(kind, text) for kind, text in asked if text)


@dataclass(frozen=True)
class RenderedHost:
    host: MeshHost
    config: str  # nats-server.conf text
    servers: tuple[str, ...]  # the client server order for this host


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid nats-server config string


def _tls_block(opts: DeployOptions, indent: str, *, verify: bool) -> list[str]:
    lines = [f"{indent}tls {{", f"{indent}  cert_file: {_q(opts.tls_cert or '')}",
             f"{indent}  key_file: {_q(opts.tls_key or '')}"]
    if opts.tls_ca:
        lines.append(f"{indent}  ca_file: {_q(opts.tls_ca)}")
        if verify:
            lines.append(f"{indent}  verify: true")
    lines += [f"{indent}  timeout: 2", f"{indent}}}"]
    return lines


def render_config(host: MeshHost, members: Sequence[MeshHost], opts: DeployOptions) -> str:
    """The nats-server config text for ``host`` in a cluster of ``members`` (host included or not)."""
    me = host.address(opts.route_by if opts.route_by != "dns" else "ip")
    advertise_addr = host.address(opts.route_by)
    bind = "0.0.0.0" if opts.listen == "0.0.0.0" else me.strip("[]")
    others = [m for m in members if m.name != host.name]
    sec = secure_render(opts.secure_dir, opts.install_dir) if opts.secure_dir else None
    route_scheme = "tls" if opts.route_tls or sec else "nats"
    routes = [f"{route_scheme}://{m.address(opts.route_by)}:{opts.cluster_port}" for m in others]
    lines = [
        f"# nats-server config for {host.name} (rendered by `nxs deploy render`; edit the flags, not this file)",
        f"server_name: {_q(host.name)}",
        f"listen: {_q(f'{bind}:{opts.client_port}')}",
        f"client_advertise: {_q(f'{advertise_addr}:{opts.client_port}')}",
        f"http: {_q(f'{opts.monitor_listen}:{opts.monitor_port}')}",
        "max_payload: 1MB",
        "",
        "jetstream {",
        f"  store_dir: {_q(opts.store_dir)}",
        "  # always: fsync before every acknowledgement (no acknowledged write lost on power failure);",
        "  # a duration (e.g. 2m) is faster but a simultaneous power loss may drop acknowledged writes.",
        f"  sync_interval: {opts.sync_interval if opts.sync_interval == 'always' else _q(opts.sync_interval)}",
    ]
    if opts.max_file_store:
        lines.append(f"  max_file_store: {opts.max_file_store}")
    if opts.relay:
        lines.append(jetstream_domain(opts.cluster_name))
    lines += ["}", ""]
    if sec is not None:
        lines += sec.client_blocks(host.name)
    elif opts.tls_cert:
        lines += _tls_block(opts, "", verify=False)
        lines.append("")
    for listener in opts.listeners:
        lines += listener_block(listener, bind=bind, tls=_listener_tls(host, opts, sec, listener.kind))
    if opts.relay:  # the relay hub's leafnode connection comes in here
        lines += member_leaf_block(bind, _listener_tls(host, opts, sec))
    if not others:  # one server: no cluster block (a JetStream cluster of one would wait for routes)
        return "\n".join(lines)
    lines += [
        "cluster {",
        f"  name: {_q(opts.cluster_name)}",
        f"  listen: {_q(f'{bind}:{opts.cluster_port}')}",
        f"  advertise: {_q(f'{advertise_addr}:{opts.cluster_port}')}",
        "  routes: [",
        *(f"    {_q(r)}" for r in routes),
        "  ]",
    ]
    if sec is not None:
        lines += sec.tls_block(host.name, "  ", admin=False)  # routes: node certificates only, both ways
    elif opts.route_tls:
        lines += _tls_block(opts, "  ", verify=True)
    lines += ["}", ""]
    return "\n".join(lines)


def _listener_tls(host: MeshHost, opts: DeployOptions, sec: SecureRender | None,
                  kind: Kind = "websocket") -> list[str] | None:
    """The ``tls {}`` of a WebSocket/MQTT listener: the client port's (secure: mutual TLS, pinned; MQTT:
    device certificates only, mapped to their users)."""
    if sec is not None:
        return sec.mqtt_tls_block(host.name, "  ") if kind == "mqtt" else sec.tls_block(host.name, "  ", admin=True)
    return _tls_block(opts, "  ", verify=False) if opts.tls_cert else None


def client_servers(host: MeshHost, members: Sequence[MeshHost], opts: DeployOptions) -> tuple[str, ...]:
    """Client order on ``host``: its own server on loopback, the other members, the relay."""
    scheme = "tls" if opts.tls_cert or opts.secure_dir else "nats"
    local = f"{scheme}://127.0.0.1:{opts.client_port}" if opts.listen == "0.0.0.0" else \
        f"{scheme}://{host.address('ip')}:{opts.client_port}"
    peers = [f"{scheme}://{m.address(opts.route_by)}:{opts.client_port}" for m in members if m.name != host.name]
    relay = opts.relay_hub
    return server_list(local, peers, relay.url if relay else None)


def render(hosts: Sequence[MeshHost], opts: DeployOptions) -> list[RenderedHost]:
    if not hosts:
        raise ConfigError("hosts", "no hosts: pass --host NAME=ADDR or a tailscale status with tagged peers")
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ConfigError("hosts", f"duplicate host names in {names}")
    return [RenderedHost(h, render_config(h, hosts, opts), client_servers(h, hosts, opts)) for h in hosts]


def write_configs(hosts: Sequence[MeshHost], out_dir: str | os.PathLike[str], opts: DeployOptions) -> list[Path]:
    """Write ``<name>.conf`` (nats-server) and ``<name>.env`` (NXS_URL for the worker) per host, and
    ``relay-hub.conf`` last with ``--relay``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in render(hosts, opts):
        conf = out / f"{r.host.name}.conf"
        conf.write_text(r.config)
        (out / f"{r.host.name}.env").write_text(
            f"# client settings for {r.host.name}: local server first, members next, relay last\n"
            f"NXS_URL={','.join(r.servers)}\nNXS_INSTANCE_ID={r.host.name}\n"
        )
        paths.append(conf)
    if (hub := render_hub(hosts, opts)) is not None:
        (out / HUB_FILE).write_text(hub)
    return paths


def render_hub(hosts: Sequence[MeshHost], opts: DeployOptions) -> str | None:
    """The relay hub's config (``--relay``), leafnode-connected to ``hosts``; None without a relay."""
    if (relay := opts.relay_hub) is None:
        return None
    tls = _tls_block(opts, "  ", verify=False) if opts.tls_cert else None
    members = [f"{h.address(opts.route_by)}:{LEAF_PORT}" for h in hosts]
    return hub_config(relay, members, tls=tls, tls_ca=opts.tls_ca, domain=opts.cluster_name)


def check_config(path: str | os.PathLike[str], *, timeout: float = 20.0) -> None:
    """``nats-server -t -c PATH``: raises ``ServerError`` with the server's own message if invalid."""
    try:
        proc = subprocess.run(
            [find_nats_server(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise ServerError(f"nats-server -t -c {path} did not finish within {timeout}s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ServerError(f"{path}: nats-server rejects it: {' '.join(detail[-3:])}")
