"""Mesh identities on disk: a CA, and per node (and one ``admin``) a TLS certificate, an nkey, a seal key.

    layout = init_identities("secure/", hosts)          # `nxs deploy secure init`
    layout.node_dir("n1")                                # secure/nodes/n1/: copy it to n1 as /etc/nxs
    rotate_identity("secure/", "n2", host)              # new keys for n2; re-render, reload servers
    revoke_identity("secure/", "n3")                    # n3 can no longer connect once servers reload
    init_identities("secure/", [], devices=["sensor-1"])  # an MQTT device: secure/devices/sensor-1/

Layout (every key file 0600, directories 0700)::

    DIR/ca.pem ca.key trust.json mesh-seal.key
    DIR/nodes/<id>/node.pem node.key node.nk seal.key ca.pem trust.json mesh-seal.key nxs.toml
    DIR/admin/    node.pem node.key node.nk ca.pem trust.json nxs.toml
    DIR/devices/<id>/device.pem device.key ca.pem

A node directory is self-contained: it holds what its server and its worker need and nothing of
another node's secrets. The certificate serves both as the server's certificate (its SANs are the
host's addresses and loopback) and as the worker's client certificate. ``node.nk`` is an nkeys user
seed: the server authenticates the node by it and maps it to the node's permissions, and the worker
signs its envelopes with it. ``trust.json`` carries every identity's public keys, the hash of each
certificate's public key (the servers pin those, so a revoked certificate is refused even though the
CA signed it) and the revoked keys.

A **device** (an MQTT client: ``--device ID``) gets only a client certificate: CN = its id, one URI
SAN ``nxs-device:<id>`` that nats-server's ``verify_and_map`` maps to the device's user
(``deploy.permissions.device_user``), no nkey (MQTT cannot answer the nkey challenge), no seal key
(nothing is sealed to it). Why a certificate and not a password: the device's secret never leaves
its directory (the server config holds only the pin), nothing needs bcrypt, and it is revoked like
a node (unpinned: refused at the TLS handshake; the servers with the MQTT listener need a restart, since
nats-server does not reload MQTT settings). trust.json lists it under ``devices``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nacl.public import PrivateKey

from nxs_mesh.deploy.permissions import device_user
from nxs_mesh.deploy.tailscale import MeshHost
from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import ConfigError, EnvelopeError
from nxs_mesh.wire.trust import read_trust_file

__all__ = ["ADMIN", "Identity", "SecureLayout", "init_identities", "load_trust", "revoke_identity",
           "rotate_identity", "spki_sha256"]

ADMIN = "admin"
_CERT_DAYS = 397  # the longest leaf lifetime browsers and most tools accept; rotate before expiry
_CA_DAYS = 3650


@dataclass(frozen=True)
class Identity:
    """One identity's public side, as trust.json records it."""

    name: str
    sign: str  # nkey public key "U..."
    seal: str | None  # base64 X25519 public key (admin has none: nobody seals to it)
    cert_sha256: str  # hex SHA-256 of the certificate's SubjectPublicKeyInfo (nats-server pinned_certs)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sign": self.sign, "cert_sha256": self.cert_sha256}
        if self.seal is not None:
            out["seal"] = self.seal
        return out


class SecureLayout:
    """The paths of a secure directory (nothing is read or written by constructing one)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    ca_pem = property(lambda self: self.root / "ca.pem")
    ca_key = property(lambda self: self.root / "ca.key")
    trust = property(lambda self: self.root / "trust.json")
    mesh_seal = property(lambda self: self.root / "mesh-seal.key")

    def node_dir(self, name: str) -> Path:
        return self.root / ADMIN if name == ADMIN else self.root / "nodes" / name

    def device_dir(self, name: str) -> Path:
        return self.root / "devices" / name

    def devices(self) -> list[str]:
        base = self.root / "devices"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def nodes(self) -> list[str]:
        return sorted(p.name for p in (self.root / "nodes").iterdir() if p.is_dir()) \
            if (self.root / "nodes").is_dir() else []


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created with its final mode, so a secret is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600 if secret else 0o644)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def spki_sha256(cert_pem: bytes) -> str:
    """Hex SHA-256 of a certificate's SubjectPublicKeyInfo: what nats-server's ``pinned_certs`` lists."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize().hex()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nxs-mesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(layout: SecureLayout) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("nxs-mesh CA")).issuer_name(_name("nxs-mesh CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(layout.ca_key, _pem_key(key), secret=True)
    _write(layout.ca_pem, cert.public_bytes(serialization.Encoding.PEM), secret=False)


def _sans(name: str, host: MeshHost | None) -> list[x509.GeneralName]:
    ips = {"127.0.0.1", "::1"}
    dns = {"localhost", name}
    if host is not None:
        ips.update(a for a in (host.ipv4, host.ipv6) if a)
        if host.dns_name:
            dns.add(host.dns_name)
    return [*(x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(ips)),
            *(x509.DNSName(d) for d in sorted(dns))]


def _issue_cert(layout: SecureLayout, name: str, sans: list[x509.GeneralName], days: int, *,
                server: bool = True) -> tuple[bytes, bytes]:
    try:
        ca_key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(layout.ca_pem.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError("ca", f"cannot read the mesh CA in {layout.root}: {exc}") from None
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([*([ExtendedKeyUsageOID.SERVER_AUTH] if server else []),
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _new_identity(layout: SecureLayout, name: str, host: MeshHost | None, days: int) -> Identity:
    d = layout.node_dir(name)
    cert_pem, key_pem = _issue_cert(layout, name, _sans(name, host), days)
    _write(d / "node.pem", cert_pem, secret=False)
    _write(d / "node.key", key_pem, secret=True)
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    _write(d / "node.nk", seed, secret=True)
    sign = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seal = None
    if name != ADMIN:
        seal_key = PrivateKey.generate()
        _write(d / "seal.key", base64.b64encode(bytes(seal_key)), secret=True)
        seal = base64.b64encode(bytes(seal_key.public_key)).decode()
    return Identity(name, sign, seal, spki_sha256(cert_pem))


def load_trust(path: str | os.PathLike[str]) -> dict[str, Any]:
    """trust.json as a dict (version 1), with a clear error when it is missing or malformed."""
    return read_trust_file(Path(path))


def _node_toml(layout: SecureLayout, name: str, install_dir: str | None, servers: Sequence[str]) -> str:
    base = Path(install_dir) if install_dir else layout.node_dir(name)
    lines = ["# nxs client settings for this identity (written by `nxs deploy secure init`)", "[mesh]"]
    if name != ADMIN:
        lines.append(f'instance_id = "{name}"')
    if servers:
        lines.append("servers = [" + ", ".join(json.dumps(s) for s in servers) + "]")
    lines += [f'tls_ca = "{base / "ca.pem"}"', f'tls_cert = "{base / "node.pem"}"',
              f'tls_key = "{base / "node.key"}"', f'nkey_seed = "{base / "node.nk"}"',
              f'trust_file = "{base / "trust.json"}"', "secure = true"]
    if name != ADMIN:
        lines += [f'seal_key = "{base / "seal.key"}"', f'mesh_seal_key = "{base / "mesh-seal.key"}"']
    return "\n".join(lines) + "\n"


def _publish_shared(layout: SecureLayout, trust: dict[str, Any], install_dir: str | None,
                    servers: dict[str, Sequence[str]]) -> None:
    """trust.json everywhere, and the shared public/mesh files copied into each identity's directory."""
    text = (json.dumps(trust, indent=2, sort_keys=True) + "\n").encode()
    _write(layout.trust, text, secret=False)
    for name in [*layout.nodes(), ADMIN]:
        d = layout.node_dir(name)
        if not d.is_dir():
            continue
        _write(d / "trust.json", text, secret=False)
        _write(d / "ca.pem", layout.ca_pem.read_bytes(), secret=False)
        if name != ADMIN:
            _write(d / "mesh-seal.key", layout.mesh_seal.read_bytes(), secret=True)
        toml = d / "nxs.toml"
        if not toml.exists() or install_dir or servers.get(name):  # keep what an earlier init wrote
            _write(toml, _node_toml(layout, name, install_dir, servers.get(name, ())).encode(), secret=False)
    for device in layout.devices():  # a device verifies its server with the mesh CA
        _write(layout.device_dir(device) / "ca.pem", layout.ca_pem.read_bytes(), secret=False)


def _read_or_new_trust(layout: SecureLayout) -> dict[str, Any]:
    if layout.trust.exists():
        return load_trust(layout.trust)
    return {"version": 1, "nodes": {}, "admin": None, "mesh_seal": None, "revoked": []}


def _new_device(layout: SecureLayout, trust: dict[str, Any], device: str, days: int) -> None:
    try:
        check_id(device, "device")
    except EnvelopeError as exc:
        raise ConfigError("--device", str(exc)) from None
    if device == ADMIN or device in trust["nodes"]:
        raise ConfigError("--device", f"{device!r} is already a node's (or the admin's) identity: a device needs "
                                      "its own id")
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(device_user(device))]
    cert_pem, key_pem = _issue_cert(layout, device, sans, days, server=False)
    d = layout.device_dir(device)
    _write(d / "device.pem", cert_pem, secret=False)
    _write(d / "device.key", key_pem, secret=True)
    trust.setdefault("devices", {})[device] = {"cert_sha256": spki_sha256(cert_pem)}


def init_identities(root: str | os.PathLike[str], hosts: Sequence[MeshHost], *, install_dir: str | None = None,
                    servers: dict[str, Sequence[str]] | None = None, days: int = _CERT_DAYS,
                    devices: Sequence[str] = ()) -> SecureLayout:
    """Create the CA (once), the admin identity (once), every host's identity and every device's
    certificate (``devices``: MQTT clients) that is missing.

    Idempotent: running it again with more hosts adds them and keeps every existing key.
    """
    layout = SecureLayout(root)
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not layout.ca_key.exists():
        _make_ca(layout)
    trust = _read_or_new_trust(layout)
    if not layout.mesh_seal.exists():
        mesh_key = PrivateKey.generate()
        _write(layout.mesh_seal, base64.b64encode(bytes(mesh_key)), secret=True)
        trust["mesh_seal"] = base64.b64encode(bytes(mesh_key.public_key)).decode()
    if trust.get("admin") is None:
        trust["admin"] = _new_identity(layout, ADMIN, None, days).as_dict()
    for host in hosts:
        if host.name == ADMIN:
            raise ConfigError("--host", "`admin` is reserved for the admin identity")
        if host.name in trust.get("devices", {}):
            raise ConfigError("--host", f"{host.name!r} is a device's identity: a node needs its own id")
        if host.name not in trust["nodes"]:
            trust["nodes"][host.name] = _new_identity(layout, host.name, host, days).as_dict()
    for device in devices:
        if device not in trust.get("devices", {}):
            _new_device(layout, trust, device, days)
    _publish_shared(layout, trust, install_dir, servers or {})
    return layout


def rotate_identity(root: str | os.PathLike[str], name: str, host: MeshHost | None = None, *,
                    install_dir: str | None = None, days: int = _CERT_DAYS) -> Identity:
    """New certificate, nkey and seal key for ``name``; the old ones are revoked."""
    layout = SecureLayout(root)
    trust = load_trust(layout.trust)
    old = trust["admin"] if name == ADMIN else trust["nodes"].get(name)
    if name in (trust.get("devices") or {}):
        raise ConfigError("node", f"{name!r} is a device: `nxs deploy secure revoke DIR {name}`, then "
                                  f"`nxs deploy secure init DIR --device {name}` gives it a new certificate")
    if old is None:
        raise ConfigError("node", f"{name!r} has no identity in {layout.root}; known: {', '.join(trust['nodes'])}")
    trust.setdefault("revoked", []).append({"name": name, "sign": old["sign"], "cert_sha256": old["cert_sha256"]})
    new = _new_identity(layout, name, host, days)
    if name == ADMIN:
        trust["admin"] = new.as_dict()
    else:
        trust["nodes"][name] = new.as_dict()
    _publish_shared(layout, trust, install_dir, {})
    return new


def revoke_identity(root: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Remove node or device ``name`` from the trusted identities (servers refuse it once re-rendered and
    reloaded)."""
    layout = SecureLayout(root)
    trust = load_trust(layout.trust)
    old = trust["nodes"].pop(name, None) or trust.get("devices", {}).pop(name, None)
    if old is None:
        raise ConfigError("node", f"{name!r} is not a trusted node or device in {layout.root}")
    trust.setdefault("revoked", []).append({"name": name, "sign": old.get("sign"), "cert_sha256": old["cert_sha256"]})
    _publish_shared(layout, trust, None, {})
    return dict(old)
