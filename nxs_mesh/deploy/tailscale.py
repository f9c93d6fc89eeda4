"""Mesh hosts from ``tailscale status --json``: ``Self`` plus ``Peer[*]``, selected by tag.

    hosts = hosts_from_status(json.load(open("status.json")), tag="tag:nxs")

Only the documented fields are read: ``HostName``, ``DNSName``, ``TailscaleIPs``, ``Tags`` and
``Online``. Nothing here runs ``tailscale`` itself: the caller passes the JSON (a file, or stdin from
``tailscale status --json | nxs deploy render --tailscale-status -``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nxs_mesh.wire.errors import ConfigError

__all__ = ["MeshHost", "hosts_from_status", "load_status", "parse_host_flag"]

_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class MeshHost:
    """One cluster member: a name (server_name), its Tailscale addresses and MagicDNS name."""

    name: str
    ipv4: str | None = None
    ipv6: str | None = None
    dns_name: str | None = None
    tags: tuple[str, ...] = ()
    online: bool = True
    is_self: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def address(self, route_by: str = "ip") -> str:
        """The address peers use: the IPv4 (default), the IPv6, or the MagicDNS name."""
        if route_by == "dns" and self.dns_name:
            return self.dns_name
        if route_by == "ipv6" and self.ipv6:
            return f"[{self.ipv6}]"
        if self.ipv4:
            return self.ipv4
        if self.ipv6:
            return f"[{self.ipv6}]"
        if self.dns_name:
            return self.dns_name
        raise ConfigError("hosts", f"host {self.name} has no address")


def _server_name(raw: str) -> str:
    name = _NAME_RE.sub("-", raw.strip()).strip("-")[:64]
    if not name:
        raise ConfigError("hosts", f"{raw!r} gives an empty server name")
    return name


def parse_host_flag(text: str) -> MeshHost:
    """``name=100.64.0.1``, ``name=host.tailnet.ts.net`` or ``name=fd7a:115c:a1e0::1``."""
    name, sep, addr = text.partition("=")
    if not sep or not name.strip() or not addr.strip():
        raise ConfigError("--host", f"{text!r}: expected NAME=ADDRESS (e.g. n1=100.64.0.1)")
    addr = addr.strip()
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]+", addr):
            raise ConfigError("--host", f"{addr!r} is neither an IP address nor a DNS name") from None
        return MeshHost(_server_name(name), dns_name=addr.rstrip("."))
    if ip.version == 4:
        return MeshHost(_server_name(name), ipv4=str(ip))
    return MeshHost(_server_name(name), ipv6=str(ip))


def load_status(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("tailscale-status", f"not JSON (expected `tailscale status --json`): {exc}") from None
    if not isinstance(data, dict) or "Self" not in data:
        raise ConfigError("tailscale-status", "no `Self` field: is this `tailscale status --json` output?")
    return data


def _host(node: Mapping[str, Any], *, is_self: bool) -> MeshHost:
    ips = [ipaddress.ip_address(a) for a in node.get("TailscaleIPs") or [] if _is_ip(a)]
    v4 = next((str(a) for a in ips if a.version == 4), None)
    v6 = next((str(a) for a in ips if a.version == 6), None)
    dns = (node.get("DNSName") or "").rstrip(".") or None
    host_name = node.get("HostName") or (dns.split(".")[0] if dns else "")
    # HostName is what the machine calls itself; two machines may share it, the DNS label is unique.
    label = dns.split(".")[0] if dns else host_name
    return MeshHost(
        name=_server_name(label or host_name),
        ipv4=v4, ipv6=v6, dns_name=dns,
        tags=tuple(node.get("Tags") or ()),
        online=bool(node.get("Online", True)) if not is_self else True,
        is_self=is_self,
        extra={"HostName": host_name, "OS": node.get("OS", "")},
    )


def _is_ip(text: Any) -> bool:
    try:
        ipaddress.ip_address(text)
    except (TypeError, ValueError):
        return False
    return True


def hosts_from_status(
    status: Mapping[str, Any], *, tag: str | None = "tag:nxs", include_offline: bool = True
) -> list[MeshHost]:
    """Select mesh hosts (Self and peers carrying ``tag``; all of them when ``tag`` is None).

    Offline peers are kept by default: they are still cluster members and their routes are retried;
    ``include_offline=False`` leaves them out. Order: Self first, then peers by name (stable output).
    """
    selected: list[MeshHost] = []
    me = status.get("Self")
    if isinstance(me, Mapping):
        h = _host(me, is_self=True)
        if tag is None or tag in h.tags:
            selected.append(h)
    peers: Iterable[Any] = (status.get("Peer") or {}).values()
    others = []
    for peer in peers:
        if not isinstance(peer, Mapping):
            continue
        h = _host(peer, is_self=False)
        if tag is not None and tag not in h.tags:
            continue
        if not h.online and not include_offline:
            continue
        others.append(h)
    selected += sorted(others, key=lambda h: h.name)
    seen: set[str] = set()
    for h in selected:
        if h.name in seen:
            raise ConfigError("hosts", f"two hosts are named {h.name!r}; rename one or pass --host flags")
        seen.add(h.name)
    return selected
