"""The relay path (issue 13 part 5): a hub nats-server that clients reach over WebSocket/TLS when their
direct routes fail, joined to the mesh with nats-server's own leafnodes.

    relay = parse_relay("relay.example.net:443", tls=True)   # or wss://HOST:PORT, tls://HOST:PORT
    hub = hub_config(relay, ["100.64.0.1:7422"], tls=tls_lines, tls_ca=ca, domain="nxs")  # relay-hub.conf
    lines = member_leaf_block("0.0.0.0", tls_lines)          # each member: leafnodes { listen: ...:7422 }

Which side dials. The hub is the leaf: its one ``leafnodes.remotes`` entry lists every member's
leafnode port, nats-server keeps one connection to one of them and moves to another when it drops.
The other way round (each member a remote of the hub, so three leafnode connections from one cluster)
stored every message published on the hub twice in our check (50 publishes, stream sequence 100), so
it is not rendered.

JetStream. The hub runs without JetStream. Stream subjects cross the leafnode as they are (a publish
on the hub is stored and acknowledged by the cluster), but the plain ``$JS.API.>`` does not: without
a domain a client on the hub could publish and not consume (checked: consumer creation answered 503).
So with ``--relay`` the members' JetStream gets ``domain: <cluster name>`` (their own clients keep
using ``$JS.API``) and the hub maps ``$JS.API.>`` to ``$JS.<domain>.API.>``, which crosses leafnodes:
a client on the hub uses the cluster's streams, consumers and dedup unchanged. KV writes need the same
(``hub_mappings``): nats-server denies ``$KV.>`` on a leafnode between domains, so without the mapping
``nxs node run`` on the hub never got its Doctor lease or an exactly-once claim ("no response from
stream"); the Object Store's ``$O.>`` crosses as it is. That is also how a client tells it is on the
relay (``transport.connection.server_path``): the server it is connected to says ``jetstream: false``
in its INFO while the mesh's members all run JetStream.

Onto the relay and back (``transport.path_probe``). A cut direct link sends no RST: each connection
sets ``TCP_USER_TIMEOUT`` (2 s), so the kernel drops it once a heartbeat stays unacknowledged and
nats-py reconnects down the list to the relay, inside the Doctor's 5 s. nats-py then stays on the
relay, so while a link is there it probes the direct servers every 3 s (a short connection and a
JetStream account-info request, which a member cut off from the quorum cannot answer) and, when one
answers, reconnects with the relay put last. A node's status (its ``path``) is republished when the
path changes (``node.path_watch``), so ``nxs nodes`` shows the move within a heartbeat.

WebSocket or TLS. ``--relay wss://HOST:PORT`` (or just HOST:PORT) gives the hub a WebSocket listener,
for clients behind proxies that pass only HTTPS; ``--relay tls://HOST:PORT`` gives it a TLS client
port instead. nats-py keeps one transport per connection (``transport.connection.transport_groups``):
a client that joined over TCP reconnects among the TCP URLs only, so it reaches a ``wss://`` relay
when it (re)starts, and a ``tls://`` relay also by reconnecting mid-session, like any other member;
the same holds on the way back (the probe tries the direct servers of the connection's transport: a
client that started on a ``wss://`` relay returns to the TCP members when it restarts).
The hub faces the outside: TLS (``--tls-cert/--tls-key``) unless it binds to loopback. ``--secure``
relays (nkey credentials on the leafnode) are not rendered yet: refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from nxs_mesh.deploy.listeners import Listener, check_plaintext, is_loopback
from nxs_mesh.wire.errors import ConfigError

__all__ = ["LEAF_PORT", "Relay", "hub_config", "hub_mappings", "jetstream_domain", "member_leaf_block", "parse_relay"]

#: nats-server's default leafnode port; the members listen on it for the hub.
LEAF_PORT = 7422


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    scheme: str = "wss"  # ws only on loopback (development)

    @property
    def url(self) -> str:
        """The URL clients list last, e.g. ``wss://relay.example.net:443``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_relay(text: str, *, tls: bool) -> Relay:
    """``HOST:PORT`` (wss, or ws on loopback) or a ``ws://``/``wss://``/``tls://`` URL for ``--relay``."""
    u = urlparse(text if "://" in text else f"{'wss' if tls or not _loopback_text(text) else 'ws'}://{text}")
    if u.scheme not in ("ws", "wss", "tls"):
        raise ConfigError("--relay", f"{text!r}: give HOST:PORT, or a wss://, ws:// (loopback) or tls:// URL")
    try:
        port = u.port
    except ValueError:
        port = None
    if not u.hostname or port is None:
        raise ConfigError("--relay", f"{text!r}: give HOST:PORT, e.g. relay.example.net:443")
    if u.scheme == "ws" and not is_loopback(u.hostname):
        raise ConfigError("--relay", f"{text!r}: ws:// without TLS is for loopback only; use wss:// with "
                                     "--tls-cert/--tls-key")
    if u.scheme in ("wss", "tls") and not tls:
        raise ConfigError("--relay", f"{text!r}: a {u.scheme}:// relay needs --tls-cert/--tls-key for the hub")
    return Relay(u.hostname, port, u.scheme)


def _loopback_text(text: str) -> bool:
    return is_loopback(text.rpartition(":")[0].strip("[]"))


def jetstream_domain(domain: str) -> str:
    """The line a member's ``jetstream {}`` gets with a relay (its clients' ``$JS.API`` is unchanged)."""
    return f"  domain: {json.dumps(domain)}  # the relay hub maps its clients' $JS.API here"


def hub_mappings(domain: str) -> dict[str, str]:
    """What the hub rewrites for its clients: the JetStream API and the KV writes, to the members'
    domain. A KV write (``$KV.<bucket>.<key>``, what nats-py's put/create/update publish) is a stream
    message like any other, but nats-server denies ``$KV.>`` (with ``$JS.API.>`` and ``$OBJ.>``) on a
    leafnode between different JetStream domains: "no response from stream" at once, so no Doctor lease
    and no exactly-once claim. ``$JS.<domain>.API.$KV.>`` crosses and the members' domain mappings turn
    it back into ``$KV.>`` (what nats.go does for a domain context). The Object Store's ``$O.>`` (not
    the legacy ``$OBJ``) is not denied: it crosses as it is, and must not be mapped (checked: a
    ``$O`` mapping makes file uploads time out)."""
    api = f"$JS.{domain}.API"
    return {"$JS.API.>": f"{api}.>", "$KV.>": f"{api}.$KV.>"}


def member_leaf_block(bind: str, tls: list[str] | None, port: int = LEAF_PORT) -> list[str]:
    """``leafnodes { listen }`` on a member: where the hub's leafnode connection comes in."""
    return ["leafnodes {", f"  listen: {json.dumps(f'{bind}:{port}')}", *(tls or []), "}", ""]


def hub_config(relay: Relay, members: Sequence[str], *, tls: list[str] | None, tls_ca: str | None,
               domain: str, monitor_port: int = 8222) -> str:
    """The hub's nats-server config: where clients come in (``_client_side``) and one leafnode remote
    listing every member's leafnode port (``members``: ``ADDRESS:PORT`` each; no JetStream: it uses the
    cluster's through the leafnode)."""
    if not members:
        raise ConfigError("hosts", "a relay needs at least one mesh host to connect to")
    scheme = "tls" if tls else "nats"
    urls = ", ".join(json.dumps(f"{scheme}://{a}") for a in members)
    lines = [
        "# relay hub (rendered by `nxs deploy render --relay`): clients reach the mesh here when their",
        "# direct routes fail; no JetStream here, the leafnode brings the cluster's.",
        'server_name: "nxs-relay"',
        "# the cluster's JetStream API and KV writes (denied on the leafnode as they are), reached over",
        "# the leafnode in the members' domain",
        f"mappings {{ {', '.join(f'{json.dumps(k)}: {json.dumps(v)}' for k, v in hub_mappings(domain).items())} }}",
        *_client_side(relay, tls),
        f'http: "127.0.0.1:{monitor_port}"',
        "",
    ]
    lines += ["leafnodes {", "  reconnect: \"1s\"  # between attempts: move to another member fast",
              "  remotes [", "    {", f"      urls: [{urls}]"]
    if tls_ca:
        lines += ["      tls {", f"        ca_file: {json.dumps(tls_ca)}", "      }"]
    lines += ["    }", "  ]", "}", ""]
    return "\n".join(lines)


def _client_side(relay: Relay, tls: list[str] | None) -> list[str]:
    """Where clients come in: the client port with TLS (a tls:// relay), else a WebSocket listener."""
    if relay.scheme == "tls":
        assert tls is not None  # parse_relay: tls:// needs --tls-cert/--tls-key
        return [f'listen: "0.0.0.0:{relay.port}"', "tls {", *(line[2:] for line in tls[1:-1]), "}"]
    listener = Listener("websocket", relay.port, "0.0.0.0" if tls else relay.host)
    lines = ['listen: "127.0.0.1:4222"  # plain clients: local tools only', "websocket {",
             f"  listen: {json.dumps(f'{listener.bind(relay.host)}:{relay.port}')}"]
    if tls is None:
        check_plaintext(listener, relay.host, hint="--relay wss://HOST:PORT with --tls-cert/--tls-key")
        lines.append("  no_tls: true  # loopback only (checked when rendered)")
    else:
        lines += tls
    return [*lines, "}"]
