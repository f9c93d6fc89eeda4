"""A relay hub beside a ``NetnsLab`` (issue 13 part 5): its own namespace on a second LAN, reached by
every host over ``eth1``, so cutting a host's ``eth0`` (its direct links) leaves its way to the relay.

    with NetnsLab(3) as lab, RelayLink(lab) as link:
        link.address(lab.hosts[0])      # 100.64.<r>.1, the host's address on the relay LAN
        link.hub_address                # 100.64.<r>.254, where the hub listens
        cert, key = lab_certificate(tmp_path, link.addresses())  # TLS: the hub is not on loopback
        servers = relay_servers(lab, link, cert, tmp_path, cluster="c1")  # members + hub, not started

Everything stays inside the lab's namespaces (100.64.x.y addresses only); ``close()`` deletes the relay
namespace, and the veths go with it (the hosts' ends too).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from nxs_mesh.deploy.relay import Relay, hub_config, jetstream_domain, member_leaf_block
from nxs_mesh.testing.netns import NetnsHost, NetnsLab, _ip, veth_to_bridge
from nxs_mesh.transport.server import NatsServer

__all__ = ["CLIENT", "RELAY", "RelayLink", "lab_certificate", "member_jetstream", "relay_servers"]

CLIENT, MONITOR, ROUTE, LEAF, RELAY = 4222, 8222, 6222, 7422, 4443


class RelayLink:
    def __init__(self, lab: NetnsLab) -> None:
        self.lab = lab
        self.ns = f"{lab.tag}-relay"
        self.subnet = random.choice([s for s in range(1, 255) if s != lab.subnet])
        self.hub_address = f"100.64.{self.subnet}.254"
        self._made = False

    def address(self, host: NetnsHost) -> str:
        return f"100.64.{self.subnet}.{self.lab.hosts.index(host) + 1}"

    def addresses(self) -> list[str]:
        """The hub's and every host's address on the relay LAN (for the lab certificate)."""
        return [self.hub_address, *(self.address(h) for h in self.lab.hosts)]

    def start(self) -> RelayLink:
        try:
            _ip("netns", "add", self.ns)
            self._made = True
            _ip("-n", self.ns, "link", "add", "br1", "type", "bridge")
            _ip("-n", self.ns, "addr", "add", f"{self.hub_address}/24", "dev", "br1")
            _ip("-n", self.ns, "link", "set", "br1", "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
            for i, h in enumerate(self.lab.hosts, 1):
                veth_to_bridge(h.ns, "eth1", f"{self.address(h)}/24", self.ns, "br1", f"r{i}")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._made:
            self._made = False
            _ip("netns", "del", self.ns)

    def __enter__(self) -> RelayLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def lab_certificate(directory: Path, addresses: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate for ``addresses`` (IP SANs), for wss:// and leafnode TLS in the lab;
    the certificate is its own CA."""
    cert, key = directory / "lab.crt", directory / "lab.key"
    san = ",".join(f"IP:{a}" for a in addresses)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=nxs-lab", "-addext", f"subjectAltName={san}", "-addext",
         "basicConstraints=critical,CA:TRUE", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def _tls(cert: Path) -> list[str]:
    return ["  tls {", f'    cert_file: "{cert}"', f'    key_file: "{cert.with_suffix(".key")}"', "  }"]


def member_jetstream(store: Path, domain: str) -> str:
    """A member's ``jetstream {}`` with the relay's domain (``NatsServer`` renders none: jetstream=False
    there, this block instead)."""
    return f'jetstream {{\n  store_dir: "{store}"\n{jetstream_domain(domain)}\n}}\n'


def relay_servers(lab: NetnsLab, link: RelayLink, cert: Path, store: Path, *, cluster: str) -> list[NatsServer]:
    """The members (routes on eth0, a TLS leafnode port on eth1) and, last, the hub (``tls://`` client
    port, no JetStream) from ``deploy.relay``. The hub dials h1 and h2, the sites it can reach; the
    last host is the one behind the failing links. Not started."""
    leaf = "\n".join(member_leaf_block("0.0.0.0", _tls(cert), LEAF))
    servers = [NatsServer(host=h.address, port=CLIENT, monitor_port=MONITOR, store_dir=store / h.name,
                          name=h.name, cluster_name=cluster, cluster_port=ROUTE, netns=h.ns,
                          jetstream=False, extra_conf=member_jetstream(store / h.name, cluster) + leaf,
                          routes=[f"nats://{o.address}:{ROUTE}" for o in lab.hosts if o is not h])
               for h in lab.hosts]
    conf = store / "relay-hub.conf"
    store.mkdir(parents=True, exist_ok=True)
    conf.write_text(hub_config(Relay(link.hub_address, RELAY, "tls"), [f"{link.address(h)}:{LEAF}"
                                                                      for h in lab.hosts[:-1]],
                               tls=_tls(cert), tls_ca=str(cert), domain=cluster))
    servers.append(NatsServer(host=link.hub_address, port=RELAY, monitor_port=MONITOR, name="nxs-relay",
                              jetstream=False, config_file=conf, netns=link.ns))
    return servers
