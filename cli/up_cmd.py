"""`nxs up`: a local nats-server (or a loopback cluster) with JetStream and the mesh's streams, until a signal.

``--websocket PORT`` and ``--mqtt PORT`` add nats-server's own listeners (``nxs_mesh.deploy.listeners``):
plaintext on loopback in open mode, TLS with the mesh's certificates and nkey users with ``--secure``;
``--secure --mqtt PORT --device ID`` serves ``mqtts://`` to device certificates only (an MQTT client cannot
sign an nkey challenge: each device gets a certificate mapped to its own least-privileged user).

Every port is judged before anything starts: the options are bounded (``port_option``), and a port from
the environment or a config file, or the last port of a cluster, is checked the same way (``check_port``),
so a bad port is one usage error (exit 2), never a traceback or a wait for a server that cannot listen.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from .common import PORT_MAX, Settings, check_port, fail, port_option, run, settings
from .common import say as _say

if TYPE_CHECKING:
    from nxs_mesh import MeshConfig
    from nxs_mesh.client.admin import EnsureResult
    from nxs_mesh.deploy.listeners import Listener
    from nxs_mesh.transport.server import LocalCluster, NatsServer


def _configured_port(s: Settings, name: str, given: int | None) -> int:
    """The option's value, else the config's, checked and named by its source (NXS_PORT, the file)."""
    if given is not None:
        return given
    source = s.sources.get(name, "default")
    where = source.removeprefix("env:") if source.startswith("env:") else f"{name} ({source})"
    return check_port(getattr(s.config, name), where)


@dataclass(frozen=True)
class Edges:
    """The WebSocket and MQTT ports asked for (None: no such listener)."""

    websocket: int | None = None
    mqtt: int | None = None
    devices: tuple[str, ...] = ()  # --secure: MQTT device identities to create

    def asked(self) -> list[Listener]:
        from nxs_mesh.deploy.listeners import Listener

        return [Listener(kind, port) for kind, port in (("websocket", self.websocket), ("mqtt", self.mqtt)) if port]

    def check(self, host: str, *, secure: bool, cluster: int, port: int) -> None:
        """Usage errors before anything starts: a cluster, a shared or busy port, plaintext off loopback."""
        from nxs_mesh.deploy.listeners import check_plaintext
        from nxs_mesh.transport.server import port_is_free

        taken = [port]
        for listener in self.asked():
            if listener.port in taken:
                raise typer.BadParameter(f"{listener.port} is taken by another listener", param_hint=listener.flag)
            taken.append(listener.port)
            if cluster > 1:
                raise typer.BadParameter("runs on one server; with --cluster leave it out", param_hint=listener.flag)
            if not secure:  # the embedded server's plaintext listeners bind to loopback only
                check_plaintext(listener, host, hint="--host 127.0.0.1, or --secure for TLS")
            bind = host if secure else "127.0.0.1"
            if not port_is_free(bind, listener.port):
                raise typer.BadParameter(f"{bind}:{listener.port} is in use", param_hint=listener.flag)


def _servers(
    s: Settings, *, port: int, monitor_port: int | None, host: str, cluster: int, store_dir: Path, edges: Edges
) -> tuple[NatsServer | LocalCluster, list[NatsServer]]:
    from nxs_mesh.transport.server import LocalCluster, NatsServer, port_is_free

    if cluster > 1:
        last = port + cluster - 1
        if last > PORT_MAX:
            raise typer.BadParameter(f"--cluster {cluster} needs client ports {port}..{last}, "
                                     f"above {PORT_MAX}: choose a lower port", param_hint="--port")
        handle = LocalCluster(cluster, base_dir=store_dir, host=host,
                              client_ports=[port + i for i in range(cluster)])
        return handle, handle.servers
    mport = _configured_port(s, "monitor_port", monitor_port)
    if not port_is_free(host, mport):
        mport = -1  # nats-server picks a free one; the URL is printed below
    server = NatsServer(host=host, port=port, monitor_port=mport, store_dir=store_dir, name="nxs",
                        websocket_port=edges.websocket, mqtt_port=edges.mqtt)
    return server, [server]


DEVICE_OPT = typer.Option(None, "--device", help="With --secure: an MQTT device identity to create (a client "
                                                 "certificate in STORE/secure/devices/ID); repeat.")


def up(
    ctx: typer.Context,
    port: int = port_option(None, "--port", "-p", help="Client port [4222; env NXS_PORT]."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    store: str = typer.Option(None, "--store", help="JetStream store directory [.nxs; env NXS_DATA_DIR]."),
    cluster: int = typer.Option(1, "--cluster", min=1, max=5,
                                help="Run N routed servers on loopback, client ports PORT..PORT+N-1."),
    monitor_port: int = port_option(None, "--monitor-port",
                                    help="HTTP monitoring port [8222, a random one if that is busy]."),
    replicas: int = typer.Option(None, "--replicas", min=1, max=5, help="Stream replicas [min(3, servers)]."),
    secure: bool = typer.Option(False, "--secure", help="Try the secure mode on one machine: a mesh CA, mTLS, "
                                                        "nkey identities with least privilege (in STORE/secure)."),
    node: list[str] = typer.Option(None, "--node", help="With --secure: a node identity to create; repeat "
                                                        "[this instance's id]."),
    websocket: int = port_option(None, "--websocket", help="Also listen for WebSocket clients (ws://, or wss:// "
                                                           "with --secure) on this port."),
    mqtt: int = port_option(None, "--mqtt", help="Also listen for MQTT clients on this port (mqtt:// on loopback; "
                                                 "with --secure mqtts:// for the --device identities)."),
    device: list[str] = DEVICE_OPT,
) -> None:
    """Run a local nats-server with JetStream, create the mesh's streams, stay up until Ctrl-C / SIGTERM.

    Without --secure the server is open (no authentication): fine on loopback for development, never
    on a shared network. With --secure every client needs a certificate and an nkey from STORE/secure."""
    from nxs_mesh.wire.errors import MeshError

    s = settings(ctx)
    cfg = s.config
    port = _configured_port(s, "port", port)
    store_dir = Path(store or cfg.data_dir)
    handle, servers = _choose(s, secure, node, port=port, monitor_port=monitor_port, host=host, cluster=cluster,
                              store_dir=store_dir, edges=Edges(websocket, mqtt, tuple(device or ())))
    stop = threading.Event()
    got: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        got.append(signal.Signals(signum).name)
        stop.set()

    # Installed before the server starts: a Ctrl-C during startup then stops cleanly too.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            handle.start()
        except MeshError as exc:
            fail(str(exc), debug=s.debug, exc=exc)
        urls = _announce(s, servers, host=host, replicas=replicas or cfg.replicas or min(3, cluster),
                         secure_dir=store_dir.absolute() / "secure" if secure else None)
        _say(f"clients: --url {','.join(urls)} (or NXS_URL); Ctrl-C to stop")
        while not stop.wait(0.5):  # wakes on a signal at once; the timeout only watches the servers
            dead = [srv for srv in servers if not srv.running]
            if dead:
                tail = "\n".join(list(dead[0].log)[-10:])
                fail(f"nats-server {dead[0].name or ''} exited unexpectedly:\n{tail}")
        _say(f"stopping ({got[0] if got else 'signal'})...")
    finally:
        handle.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
    _say("stopped")


def _choose(s: Settings, secure: bool, nodes: list[str] | None, *, port: int, monitor_port: int | None, host: str,
            cluster: int, store_dir: Path, edges: Edges) -> tuple[NatsServer | LocalCluster, list[NatsServer]]:
    from nxs_mesh.wire.errors import MeshError

    if secure and cluster > 1:
        raise typer.BadParameter("--secure runs one server; for a secure cluster use `nxs deploy render --secure`",
                                 param_hint="--cluster")
    if edges.devices and not secure:
        raise typer.BadParameter("device identities are for --secure (an open server takes any MQTT client)",
                                 param_hint="--device")
    try:
        edges.check(host, secure=secure, cluster=cluster, port=port)
        if secure:
            return _secure_server(s, port=port, monitor_port=monitor_port, host=host, store_dir=store_dir,
                                  nodes=nodes or [s.config.instance_id], edges=edges)
        return _servers(s, port=port, monitor_port=monitor_port, host=host, cluster=cluster, store_dir=store_dir,
                        edges=edges)
    except MeshError as exc:
        fail(str(exc), debug=s.debug, exc=exc)


def _secure_server(s: Settings, *, port: int, monitor_port: int | None, host: str, store_dir: Path,
                   nodes: list[str], edges: Edges) -> tuple[NatsServer, list[NatsServer]]:
    """One server rendered as `nxs deploy render --secure` would, with identities in STORE/secure."""
    from nxs_mesh.deploy.identity import init_identities
    from nxs_mesh.deploy.render import DeployOptions, render_config
    from nxs_mesh.deploy.tailscale import MeshHost
    from nxs_mesh.transport.server import NatsServer, free_port, port_is_free

    hosts = [MeshHost(n, ipv4=host if host not in ("0.0.0.0", "::", "") else "127.0.0.1") for n in nodes]
    store_dir = store_dir.absolute()
    secure_dir = store_dir / "secure"
    url = f"tls://{hosts[0].ipv4}:{port}"
    init_identities(secure_dir, hosts, servers={n: (url,) for n in [*nodes, "admin"]}, devices=edges.devices)
    mport = _configured_port(s, "monitor_port", monitor_port)
    mport = mport if port_is_free("127.0.0.1", mport) else free_port()
    opts = DeployOptions(client_port=port, cluster_port=free_port(), monitor_port=mport,
                         store_dir=str(store_dir / "jetstream"), listen="tailscale", secure_dir=str(secure_dir),
                         websocket=str(edges.websocket) if edges.websocket else None,
                         mqtt=str(edges.mqtt) if edges.mqtt else None)
    conf = store_dir / "nats-server-secure.conf"
    conf.write_text(render_config(hosts[0], hosts[:1], opts))
    server = NatsServer(host=hosts[0].ipv4 or "127.0.0.1", port=port, monitor_port=mport, store_dir=store_dir,
                        name=nodes[0], config_file=conf, jetstream=False)
    return server, [server]


def _announce(s: Settings, servers: list[NatsServer], *, host: str, replicas: int,
              secure_dir: Path | None = None) -> list[str]:
    """Print where each server listens, ensure the streams, print the outcome; returns the client URLs."""
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    urls = [f"{'tls' if secure_dir else 'nats'}://{connect_host}:{srv.port}" for srv in servers]
    for srv, url in zip(servers, urls, strict=True):
        who = f"{srv.name}: " if len(servers) > 1 else ""
        _say(f"{who}nats-server {url} (monitoring {srv.monitor_url}, JetStream store {srv.store_dir})")
        if srv.websocket_port is not None:
            _say(f"{who}websocket clients: --url {srv.ws_url}")
        if srv.mqtt_port is not None and secure_dir is not None:
            _say(f"{who}MQTT devices: mqtts://{connect_host}:{srv.mqtt_port} with their certificates in "
                 f"{secure_dir}/devices/<id>/ (examples/mqtt_device.py --tls-dir DIR)")
        elif srv.mqtt_port is not None:
            _say(f"{who}MQTT clients: mqtt://{connect_host}:{srv.mqtt_port} (topics nxs/heartbeat/<id>, ...)")
    if secure_dir is None:
        _say("open mode: no authentication, anyone who can reach these ports can read and do anything; "
             "fine on loopback for development. Secure: `nxs up --secure`, or deploy/README.md for a mesh",
             style="yellow", err=True)
        results = run(_up_ensure(s.config.replace(servers=tuple(urls)), replicas), debug=s.debug)
    else:
        results = run(_up_provision(secure_dir, urls), debug=s.debug)
        _say(f"secure mode: mTLS + nkeys, least privilege; identities in {secure_dir}. Clients: "
             f"`nxs --config {secure_dir}/nodes/<id>/nxs.toml ...`, admin: `--config {secure_dir}/admin/nxs.toml`")
    _say(f"streams (replicas {min(3, replicas)}): " + ", ".join(f"{r.stream} {r.action}" for r in results))
    for r in results:
        if r.action == "conflict":
            _say(f"warning: {r.stream} conflicts with the mesh's config: {r.detail}", style="yellow", err=True)
    _say(f"listening on {','.join(urls)}")
    return urls


async def _up_provision(secure_dir: Path, urls: list[str]) -> list[EnsureResult]:
    from nxs_mesh import Mesh
    from nxs_mesh.config import load_config
    from nxs_mesh.deploy.identity import load_trust
    from nxs_mesh.node.provision import provision

    cfg, _ = load_config({"servers": ",".join(urls), "instance_id": "admin"},
                         config_file=secure_dir / "admin" / "nxs.toml", env={})
    async with Mesh(cfg, ensure=False) as mesh:
        return await provision(mesh, load_trust(secure_dir / "trust.json")["nodes"], replicas=1)


async def _up_ensure(cfg: MeshConfig, replicas: int) -> list[EnsureResult]:
    from nxs_mesh import Mesh

    async with Mesh(cfg, ensure=False) as mesh:
        return await mesh.ensure_streams(replicas)
