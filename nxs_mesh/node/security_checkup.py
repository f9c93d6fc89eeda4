"""The security part of ``nxs doctor``: open listeners, key files others can read, certificates near expiry.

    for name, level, detail in security_checks(mesh.config, mesh.server_info(), mesh.connected_url):
        ...

Judged from where this client stands: the server's INFO says whether it requires authentication,
the config names the key files, and the certificate files carry their expiry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path
from urllib.parse import urlparse

from nxs_mesh.client.outbox import outbox_path
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.link import ServerInfo

__all__ = ["security_checks"]

_EXPIRY_WARN = dt.timedelta(days=30)


def _is_loopback(url: str | None) -> bool:
    host = urlparse(url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listener(info: ServerInfo, url: str | None) -> tuple[str, str, str]:
    if info.auth_required:
        how = "TLS client certificates and " if info.tls_verify else ""
        return "access", "ok", f"{url} requires {how}credentials"
    if _is_loopback(url):
        return "access", "ok", f"{url} is open (no credentials) but on loopback only; fine for development"
    return ("access", "warn", f"{url} accepts clients without credentials on a non-loopback address: anyone "
            "who reaches it can read and do anything; secure it (`nxs deploy render --secure`, deploy/README.md)")


def _key_files(cfg: MeshConfig) -> tuple[str, str, str]:
    candidates = [cfg.tls_key, cfg.nkey_seed, cfg.creds, cfg.seal_key, cfg.mesh_seal_key]
    files = [Path(p) for p in candidates if p]
    files.append(outbox_path(cfg.data_dir, cfg.instance_id))
    exposed = []
    for path in files:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            exposed.append(f"{path} ({oct(mode)})")
    if exposed:
        return "key files", "warn", f"readable by others: {', '.join(exposed)}; `chmod 600` them"
    return "key files", "ok", f"{len(files)} checked, none readable by others"


def _certificates(cfg: MeshConfig, now: dt.datetime) -> tuple[str, str, str] | None:
    from cryptography import x509

    paths = [p for p in (cfg.tls_cert, cfg.tls_ca) if p]
    if not paths:
        return None
    notes, level = [], "ok"
    for p in paths:
        try:
            cert = x509.load_pem_x509_certificate(Path(p).read_bytes())
        except (OSError, ValueError) as exc:
            notes.append(f"{p}: unreadable ({exc})")
            level = "fail"
            continue
        left = cert.not_valid_after_utc - now
        if left <= dt.timedelta(0):
            notes.append(f"{p} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
            level = "fail"
        elif left < _EXPIRY_WARN:
            notes.append(f"{p} expires in {left.days} days: rotate it (`nxs deploy secure rotate`)")
            level = "warn" if level == "ok" else level
        else:
            notes.append(f"{Path(p).name} valid for {left.days} days")
    return "certificates", level, "; ".join(notes)


def security_checks(cfg: MeshConfig, info: ServerInfo, url: str | None,
                    now: dt.datetime | None = None) -> list[tuple[str, str, str]]:
    """(name, level, detail) rows: level ``ok``, ``warn`` or ``fail``."""
    rows = [_listener(info, url), _key_files(cfg)]
    certs = _certificates(cfg, now or dt.datetime.now(dt.UTC))
    if certs is not None:
        rows.append(certs)
    return rows
