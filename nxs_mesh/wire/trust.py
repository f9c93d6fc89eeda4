"""The mesh's public keys (``trust.json``, written by ``nxs deploy secure init``) and the one check
every received envelope goes through when it is signed (or must be).

    {"version": 1,
     "nodes": {"<id>": {"sign": "U...", "seal": "<base64 public 32 bytes>"}},
     "admin": {"sign": "U..."},
     "mesh_seal": "<base64 public 32 bytes>",
     "devices": {"<id>": {"cert_sha256": "<hex>"}}}

``check_envelope`` decides whether an envelope is what it says it is:

1. signed at all (``Nxs-Signer`` and ``Nxs-Sig``);
2. ``Nats-Msg-Id``, when present, is its ``message_id`` (or a copy the mesh made on a DLQ replay,
   ``replay:...``): so a re-publish of a captured message under a fresh id is refused, and under
   its own id JetStream's duplicate window drops it;
3. the signer is the key ``trust.json`` lists for ``source.instance_id`` (or the admin key);
4. the signature verifies (subject, message id and the exact body: ``wire.signing``);
5. fresh: its ``timestamp`` is at most ``MAX_SKEW`` seconds ahead of our clock and, when the
   envelope has a ttl, not older than ttl + ``MAX_SKEW``: a replay after the envelope's lifetime is
   refused even when no receiver remembers the id (restarts, other consumers).

The cheap checks come first; the ed25519 verification (~50 us) only for an envelope that passed them.

**Devices** (MQTT, ``nxs deploy secure init --device ID``) cannot sign: MQTT 3.1.1 has no headers. An
unsigned envelope is accepted from ``source.instance_id`` = ID only when trust.json lists ID as a
device *and* it came on that device's own subjects (``device_subject_ok``): its HEARTBEAT on
``nxs.heartbeat.<ID>``, its STATUS on ``nxs.status.<ID>``, a RESULT on ``nxs.result.<its
correlation_id>``; freshness (5.) and the ``Nats-Msg-Id`` rule (2.) hold as for signed envelopes.
What authenticates it is the server: only the device's certificate maps to a user that may publish on
``nxs.heartbeat.<ID>``/``nxs.status.<ID>`` (``deploy.permissions``: nodes publish only their own), so
a receiver that sees an unsigned heartbeat there knows who sent it. A RESULT subject is not per device
(nodes answer commands too); a device learns a correlation id only from the commands on its own
command subject, which no other device may read. Everything else from a device (a CHAT, a COMMAND,
a heartbeat claiming another id) is refused. The check returns ``DEVICE_SIGNER`` + ID in place of a
signer key (never an nkey, so it matches no node and no admin).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nxs_mesh.wire import subjects
from nxs_mesh.wire.contract import MSG_ID_HEADER
from nxs_mesh.wire.envelope import Envelope
from nxs_mesh.wire.errors import ConfigError, VerificationError
from nxs_mesh.wire.signing import SIG_HEADER, SIGNER_HEADER, verify

__all__ = ["DEVICE_SIGNER", "MAX_SKEW", "REPLAY_PREFIX", "NodeKeys", "Trust", "check_envelope", "device_subject_ok",
           "load_trust", "parse_trust", "read_trust_file"]

#: Seconds a sender's clock may be ahead of (or its message delayed beyond its ttl against) ours.
#: Generous on purpose: NTP keeps real clocks within milliseconds; this only has to stop old replays.
MAX_SKEW: Final = 60.0
#: ``Nats-Msg-Id`` of a dead letter replayed by ``nxs dlq replay`` (``contract.REPLAY_MSG_ID``).
REPLAY_PREFIX: Final = "replay:"
#: What ``check_envelope`` returns for a device's unsigned envelope, before the device id.
DEVICE_SIGNER: Final = "device:"


@dataclass(frozen=True)
class NodeKeys:
    sign: str
    seal: str | None = None


@dataclass(frozen=True)
class Trust:
    """Who holds which public key. ``signer_of(node)`` and ``is_admin(key)`` are what receivers ask."""

    nodes: Mapping[str, NodeKeys] = field(default_factory=dict)
    admin: str | None = None
    mesh_seal: str | None = None
    devices: frozenset[str] = frozenset()  # MQTT devices: unsigned, authenticated by the server (see above)
    _by_key: dict[str, str] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._by_key.update({k.sign: n for n, k in self.nodes.items()})

    def __repr__(self) -> str:
        devices = f", {len(self.devices)} devices" if self.devices else ""
        return f"<Trust {len(self.nodes)} nodes{devices}, admin {'yes' if self.admin else 'no'}>"

    def signer_of(self, node: str) -> str | None:
        keys = self.nodes.get(node)
        return keys.sign if keys is not None else None

    def node_of(self, key: str) -> str | None:
        """The node whose signing key ``key`` is (None for the admin or a stranger)."""
        return self._by_key.get(key)

    def is_admin(self, key: str | None) -> bool:
        return key is not None and key == self.admin

    def seal_of(self, node: str) -> str | None:
        keys = self.nodes.get(node)
        return keys.seal if keys is not None else None


def parse_trust(data: Any, where: str = "trust.json") -> Trust:
    """A ``Trust`` from the decoded JSON; ``ConfigError`` naming what is wrong."""
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError("trust_file", f"{where}: expected an object with \"version\": 1")
    nodes: dict[str, NodeKeys] = {}
    for node, keys in (data.get("nodes") or {}).items():
        if not isinstance(keys, dict) or not isinstance(keys.get("sign"), str):
            raise ConfigError("trust_file", f"{where}: nodes.{node} needs a \"sign\" key (U...)")
        seal = keys.get("seal")
        nodes[str(node)] = NodeKeys(keys["sign"], seal if isinstance(seal, str) else None)
    admin = data.get("admin") or {}
    if not isinstance(admin, dict):
        raise ConfigError("trust_file", f"{where}: \"admin\" must be an object {{\"sign\": \"U...\"}}")
    mesh_seal = data.get("mesh_seal")
    devices = data.get("devices") or {}
    if not isinstance(devices, dict):
        raise ConfigError("trust_file", f"{where}: \"devices\" must be an object {{\"<id>\": {{...}}}}")
    if both := sorted(set(devices) & set(nodes)):
        raise ConfigError("trust_file", f"{where}: {', '.join(both)} listed as node and as device")
    return Trust(nodes, admin.get("sign") if isinstance(admin.get("sign"), str) else None,
                 mesh_seal if isinstance(mesh_seal, str) else None, frozenset(str(d) for d in devices))


def read_trust_file(path: str | Path) -> dict[str, Any]:
    """trust.json as decoded JSON (version 1, with a ``nodes`` object); ``ConfigError`` naming the file
    and what is wrong. The one reader of the file: ``load_trust`` parses it, deploy edits it."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError("trust_file", f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError("trust_file", f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("nodes", {}), dict):
        raise ConfigError("trust_file", f"{path} is not an nxs trust file (an object with \"version\": 1)")
    return data


def load_trust(path: str | Path) -> Trust:
    return parse_trust(read_trust_file(path), str(path))


def check_envelope(trust: Trust, env: Envelope, subject: str, body: bytes, headers: Mapping[str, str] | None,
                   now: float) -> str:
    """The verified signer key of ``env`` as received on ``subject`` with ``body`` and ``headers``;
    ``VerificationError`` with the reason otherwise (``now``: our wall clock, Unix seconds)."""
    headers = headers or {}
    signer, sig = headers.get(SIGNER_HEADER), headers.get(SIG_HEADER)
    source = env.source.instance_id
    if (not signer or not sig) and source not in trust.devices:
        raise VerificationError("unsigned envelope (no Nxs-Signer/Nxs-Sig)")
    mid = env.id
    nats_id = headers.get(MSG_ID_HEADER)
    if nats_id is not None and nats_id != mid and not nats_id.startswith(REPLAY_PREFIX):
        raise VerificationError(f"Nats-Msg-Id {nats_id[:40]!r} is not the envelope's message_id")
    if not signer or not sig:  # a device: its own subjects only (the server's permissions say who sent it)
        if not device_subject_ok(env, subject):
            raise VerificationError(f"device {source!r} may send only its own HEARTBEAT, STATUS and RESULTs, "
                                    f"not a {env.message_type} on {subject[:80]!r}")
        _check_fresh(env, now)
        return DEVICE_SIGNER + source
    if signer != trust.signer_of(source) and not trust.is_admin(signer):
        known = trust.node_of(signer)
        who = f"node {known!r}'s key" if known else "a key the trust file does not know"
        raise VerificationError(f"source {source!r} is not its signer ({who})")
    if not verify(signer, subject, mid, body, sig):
        raise VerificationError(f"bad signature (signer {signer[:12]}…)")
    _check_fresh(env, now)
    return signer


def device_subject_ok(env: Envelope, subject: str) -> bool:
    """Whether ``subject`` is one a device may send ``env`` on: its own heartbeat or status subject for
    a HEARTBEAT/STATUS from it, or the result subject of the RESULT's own correlation id."""
    kind, source = env.message_type, env.source.instance_id
    if kind == "HEARTBEAT":
        return subject == subjects.heartbeat(source)
    if kind == "STATUS":
        return subject == subjects.status(source)
    if kind == "RESULT":
        return isinstance(env.correlation_id, str) and subject == subjects.result(env.correlation_id)
    return False


def _check_fresh(env: Envelope, now: float) -> None:
    sent = env.timestamp.timestamp()
    if sent > now + MAX_SKEW:
        raise VerificationError(f"timestamp {sent - now:.0f}s in the future (allowed skew {MAX_SKEW:.0f}s)")
    if env.ttl and now > sent + env.ttl + MAX_SKEW:
        raise VerificationError(f"stale or replayed: sent {now - sent:.0f}s ago, ttl {env.ttl}s")
