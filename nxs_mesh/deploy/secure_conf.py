"""The secure parts of a rendered nats-server config (``nxs deploy render --secure DIR``).

Every listener requires a client certificate signed by the mesh CA *and* pinned (the SHA-256 of its
public key is in trust.json: a revoked identity's certificate is refused even though the CA signed
it), and clients authenticate by their nkey, which maps them to their permissions
(``deploy.permissions``). Routes require a node certificate both ways, so a rogue server cannot join.
Monitoring stays on loopback. The MQTT listener (``mqtt_tls_block``) takes only devices: their
certificates are pinned there (and only there), and ``verify_and_map`` maps each to its device user. Paths point where the node's directory is installed on its host
(``--install-dir``, default: the directory itself, which is right on one machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nxs_mesh.deploy.identity import SecureLayout, load_trust
from nxs_mesh.deploy.permissions import authorization_block
from nxs_mesh.wire.errors import ConfigError

__all__ = ["SecureRender", "secure_render"]


class SecureRender:
    """What the renderer needs from a secure directory for one host."""

    def __init__(self, layout: SecureLayout, trust: dict[str, Any], install_dir: str | None) -> None:
        self.layout, self.trust, self.install_dir = layout, trust, install_dir

    def node_path(self, host: str, file: str) -> str:
        if host not in self.trust["nodes"]:
            raise ConfigError("--secure", f"{host} has no identity in {self.layout.root}: run "
                              f"`nxs deploy secure init {self.layout.root} --host {host}=ADDRESS` first")
        base = Path(self.install_dir) if self.install_dir else self.layout.node_dir(host)
        return str(base / file)

    def _pins(self, *, admin: bool) -> list[str]:
        pins = [n["cert_sha256"] for _, n in sorted(self.trust["nodes"].items())]
        if admin:
            pins.append(self.trust["admin"]["cert_sha256"])
        return pins

    def tls_block(self, host: str, indent: str, *, admin: bool, pins: list[str] | None = None,
                  verify: str = "verify") -> list[str]:
        q = json.dumps
        pins = self._pins(admin=admin) if pins is None else pins
        return [f"{indent}tls {{", f"{indent}  cert_file: {q(self.node_path(host, 'node.pem'))}",
                f"{indent}  key_file: {q(self.node_path(host, 'node.key'))}",
                f"{indent}  ca_file: {q(self.node_path(host, 'ca.pem'))}",
                f"{indent}  {verify}: true",
                f"{indent}  pinned_certs: [{', '.join(q(p) for p in pins)}]",
                f"{indent}  timeout: 2", f"{indent}}}"]

    def mqtt_tls_block(self, host: str, indent: str) -> list[str]:
        """The MQTT listener's ``tls {}``: the node's certificate, device certificates required, pinned
        and mapped to their users (``verify_and_map``). No devices: an error saying how to add one."""
        devices = self.trust.get("devices") or {}
        if not devices:
            raise ConfigError("--mqtt", f"{self.layout.root} has no device identities, so no MQTT client could "
                                        f"connect: add one with `nxs deploy secure init {self.layout.root} "
                                        "--device ID` (or `nxs up --secure --mqtt PORT --device ID`)")
        pins = [d["cert_sha256"] for _, d in sorted(devices.items())]
        return self.tls_block(host, indent, admin=False, pins=pins, verify="verify_and_map")

    def client_blocks(self, host: str) -> list[str]:
        return [*self.tls_block(host, "", admin=True), "", authorization_block(self.trust), ""]


def secure_render(secure_dir: str, install_dir: str | None) -> SecureRender:
    layout = SecureLayout(secure_dir)
    if not layout.trust.exists():
        raise ConfigError("--secure", f"{layout.root} has no trust.json: run `nxs deploy secure init` first")
    return SecureRender(layout, load_trust(layout.trust), install_dir)
