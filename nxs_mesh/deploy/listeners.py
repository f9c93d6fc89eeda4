"""nats-server's own WebSocket and MQTT listeners, rendered (``--websocket`` / ``--mqtt``, issue 13).

    ws = parse_listener("websocket", "127.0.0.1:8080")     # or "8080": the server's own bind address
    lines = listener_block(ws, bind="0.0.0.0", tls=None)   # websocket { listen: ..., no_tls: true }

Plaintext is for development on one machine only: a listener without TLS must bind to loopback, and
anything else is a ``ConfigError`` naming the listener (``check_plaintext``). With TLS the block gets
the same ``tls {}`` as the client port: ``--tls-cert/--tls-key``, or with ``--secure`` the node
certificate, ``verify`` and the pinned certificates of the mesh's identities.

What each listener can authenticate (nats-server 2.11+):

- WebSocket speaks the NATS protocol inside the socket, so a client signs the nkey challenge as on the
  client port: with ``--secure`` the same nkey users and permissions apply, and ``wss://`` requires a
  mesh certificate (mutual TLS, pinned) like ``tls://``.
- MQTT 3.1.1 has no challenge to sign: nats-server accepts an MQTT client by username/password, token
  or a certificate map (``verify_and_map``), never by nkey. With ``--secure`` the MQTT listener is
  ``mqtts://`` only and takes the mesh's *devices* (``nxs deploy secure init --device ID``): a device
  certificate, pinned, mapped to the device's user, which may publish only its own heartbeat, status and
  RESULTs and read only its own commands (``deploy.permissions.device_permissions``). A device cannot sign
  (MQTT has no headers for ``Nxs-Signer``/``Nxs-Sig``): receivers accept its unsigned envelopes on its own
  subjects because trust.json lists it and the server's permissions authenticate it (``wire.trust``).

MQTT needs JetStream and a ``server_name`` (both always rendered here) for its sessions and QoS 1.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Final, Literal

from nxs_mesh.wire.errors import ConfigError

__all__ = ["KINDS", "Kind", "Listener", "check_plaintext", "is_loopback", "listener_block", "parse_listener"]

Kind = Literal["websocket", "mqtt"]
KINDS: Final[tuple[Kind, ...]] = ("websocket", "mqtt")
#: The URL scheme a client uses, without and with TLS.
_SCHEMES: Final = {"websocket": ("ws", "wss"), "mqtt": ("mqtt", "mqtts")}


@dataclass(frozen=True)
class Listener:
    """One listener: its kind, port, and the address it binds (None: the server's own bind address)."""

    kind: Kind
    port: int
    host: str | None = None

    @property
    def flag(self) -> str:
        return f"--{self.kind}"

    def bind(self, default: str) -> str:
        return self.host if self.host is not None else default

    def url(self, host: str, *, tls: bool) -> str:
        """Where a client connects, e.g. ``ws://127.0.0.1:8080`` or ``mqtts://100.64.0.1:8883``."""
        return f"{_SCHEMES[self.kind][tls]}://{host}:{self.port}"


def parse_listener(kind: Kind, text: str) -> Listener:
    """``PORT`` or ``HOST:PORT`` (``[::1]:PORT`` for IPv6) for ``--websocket``/``--mqtt``."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") if host else ""
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"--{kind}", f"{text!r}: give PORT or HOST:PORT with a port in 1..65535")
    if sep and not host:
        raise ConfigError(f"--{kind}", f"{text!r}: the address before ':' is empty")
    return Listener(kind, int(port_text), host or None)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``: addresses that never leave the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name (MagicDNS, a host name): it may resolve anywhere


def check_plaintext(listener: Listener, bind: str, *, hint: str | None = None) -> None:
    """A listener without TLS may bind only to loopback; anything else is an error naming it."""
    where = listener.bind(bind)
    if not is_loopback(where):
        hint = hint or f"{listener.flag} 127.0.0.1:{listener.port}, or TLS with --secure or --tls-cert/--tls-key"
        raise ConfigError(listener.flag, f"the {listener.kind} listener on {where}:{listener.port} would run "
                                         f"without TLS, which is for loopback only (development): {hint}")


def listener_block(listener: Listener, *, bind: str, tls: list[str] | None) -> list[str]:
    """The ``websocket {}`` / ``mqtt {}`` block. ``tls``: the lines of a ``tls {}`` block indented by two
    spaces, or None for plaintext (checked: loopback only)."""
    listen = json.dumps(f"{listener.bind(bind)}:{listener.port}")
    lines = [f"{listener.kind} {{", f"  listen: {listen}"]
    if tls is None:
        check_plaintext(listener, bind)
        if listener.kind == "websocket":
            lines.append("  no_tls: true  # loopback only (checked when rendered)")
    else:
        lines += tls
    if listener.kind == "mqtt":
        # A QoS 1 message not acknowledged within ack_wait is redelivered to the device.
        lines.append('  ack_wait: "30s"')
    return [*lines, "}", ""]
