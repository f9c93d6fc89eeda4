"""Message security of one client: sign what it publishes, verify and open what it receives.

Built from the config (``MeshConfig.nkey_seed``, ``trust_file``, ``seal_key``, ``mesh_seal_key``,
``secure``); the ``Mesh`` holds one and its publish path and consumers use it.

- Publish: every envelope is signed when ``nkey_seed`` is set (``wire.signing``); ``seal=True``
  seals its content to the target node's key, a broadcast to the mesh key (``wire.sealing``).
- Receive, ``secure=True``: an envelope that fails ``wire.trust.check_envelope`` (unsigned, bad
  signature, source not its signer, stale, a foreign ``Nats-Msg-Id``) or that cannot be opened
  raises ``VerificationError``/``SealError``: the consumer dead-letters it with that reason and
  never hands it to a handler.
- Receive, ``secure=False`` (open labs): a signature present is verified; a bad one is logged and
  counted (``flagged``) but the message is handled. Unsigned messages pass quietly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from nxs_mesh.client.calls import Accept, Screen
from nxs_mesh.config import MeshConfig
from nxs_mesh.transport.reader import Record
from nxs_mesh.wire.content import check_payload
from nxs_mesh.wire.envelope import Envelope, Payload, decode
from nxs_mesh.wire.errors import ConfigError, EnvelopeError, SealError, VerificationError
from nxs_mesh.wire.sealing import (
    SEAL_SCHEME,
    SEALED_HEADER,
    load_seal_key,
    open_content,
    public_key,
    seal_content,
)
from nxs_mesh.wire.signing import GRANT_HEADER, SIG_HEADER, SIGNER_HEADER, Signer, load_signer
from nxs_mesh.wire.trust import MAX_SKEW, Trust, check_envelope, load_trust

__all__ = ["Checked", "MessageSecurity", "is_sealed", "outgoing_headers", "screen_record"]

if TYPE_CHECKING:
    import nacl.public

log = logging.getLogger("nxs_mesh.client.security")


@dataclass(frozen=True)
class Checked:
    """What a receiver learnt of one envelope: its verified signer key (None when unsigned or not
    verified) and, for a signature that did not hold in open mode, why."""

    signer: str | None
    verified: bool | None  # None: no trust file or not signed (nothing to say); False: failed
    error: str | None = None


class MessageSecurity:
    """Signing key, trust, seal keys and the mode of one client (see the module docstring)."""

    def __init__(self, *, signer: Signer | None = None, trust: Trust | None = None,
                 seal_key: nacl.public.PrivateKey | None = None, mesh_seal_key: nacl.public.PrivateKey | None = None,
                 secure: bool = False) -> None:
        self.signer, self.trust, self.secure = signer, trust, secure
        self._seal_key, self._mesh_seal_key = seal_key, mesh_seal_key
        self.flagged = 0  # bad signatures let through in open mode

    def __repr__(self) -> str:
        mode = "secure" if self.secure else "open"
        return (f"<MessageSecurity {mode} [signer {self.signer.public[:8] if self.signer else '-'}, "
                f"trust {len(self.trust.nodes) if self.trust else 0} nodes]>")

    @classmethod
    def from_config(cls, cfg: MeshConfig) -> MessageSecurity:
        if cfg.secure and cfg.trust_file is None:
            raise ConfigError("trust_file", "secure mode needs the mesh's public keys (trust.json)")
        if cfg.secure and cfg.nkey_seed is None:
            raise ConfigError("nkey_seed", "secure mode needs this node's nkey seed to sign what it sends")
        return cls(
            signer=load_signer(cfg.nkey_seed) if cfg.nkey_seed else None,
            trust=load_trust(cfg.trust_file) if cfg.trust_file else None,
            seal_key=load_seal_key(cfg.seal_key) if cfg.seal_key else None,
            mesh_seal_key=load_seal_key(cfg.mesh_seal_key, "mesh_seal_key") if cfg.mesh_seal_key else None,
            secure=cfg.secure,
        )

    @property
    def active(self) -> bool:
        """Anything to do on receive (a trust file to verify against, or keys to open seals)."""
        return self.trust is not None or self.secure or self._seal_key is not None or self._mesh_seal_key is not None

    # -- publish -----------------------------------------------------------------------------------
    def sign(self, subject: str, message_id: str, data: bytes, headers: dict[str, str]) -> None:
        """Add ``Nxs-Signer``/``Nxs-Sig`` to ``headers`` (nothing without a signing key)."""
        if self.signer is not None:
            headers.update(self.signer.headers(subject, message_id, data))

    def seal(self, env: Envelope) -> Envelope:
        """``env`` with its content sealed to its target (a broadcast: to the mesh seal key)."""
        if self.trust is None:
            raise SealError("cannot seal: no trust file (MeshConfig.trust_file) with the recipients' keys")
        target = env.target
        if target.is_broadcast:
            key, whose = self.trust.mesh_seal, "the mesh (mesh_seal)"
        else:
            key, whose = self.trust.seal_of(target.instance_id), f"node {target.instance_id!r}"
        if key is None:
            raise SealError(f"cannot seal: the trust file has no seal key for {whose}")
        sealed = seal_content(env.payload.content, public_key(key))
        return msgspec.structs.replace(env, payload=Payload(sealed, env.payload.metadata))

    def can_seal_to(self, node: str) -> bool:
        """Whether the trust file has a seal key for ``node``."""
        return self.trust is not None and self.trust.seal_of(node) is not None

    # -- receive -----------------------------------------------------------------------------------
    def check(self, env: Envelope, subject: str, data: bytes, headers: Mapping[str, str] | None,
              now: float | None = None) -> Checked:
        """Verify ``env``; raises ``VerificationError`` in secure mode when it does not hold."""
        if self.trust is None:
            return Checked(None, None)
        signed = headers is not None and SIGNER_HEADER in headers and SIG_HEADER in headers
        if not self.secure and not signed:
            return Checked(None, None)
        try:
            signer = check_envelope(self.trust, env, subject, data, headers, time.time() if now is None else now)
        except VerificationError as exc:
            if self.secure:
                raise
            self.flagged += 1
            log.warning("envelope %s from %s on %s: %s (open mode: handled anyway)",
                        env.id, env.source.instance_id, subject, exc)
            return Checked(None, False, str(exc))
        return Checked(signer, True)

    def accepts_live(self, env: Envelope, subject: str, data: bytes, headers: Mapping[str, str] | None) -> bool:
        """Whether a live (core, not stored) message such as a heartbeat may be believed: in secure mode it
        must verify and be fresh (within ``MAX_SKEW`` of our clock, ttl or not: a heartbeat lives 0 s)."""
        try:
            self.check(env, subject, data, headers)
        except VerificationError as exc:
            log.warning("ignoring %s from %s on %s: %s", env.message_type, env.source.instance_id, subject, exc)
            return False
        if self.secure and abs(time.time() - env.timestamp.timestamp()) > MAX_SKEW:
            log.warning("ignoring %s from %s: timestamp outside ±%.0fs", env.message_type, env.source.instance_id,
                        MAX_SKEW)
            return False
        return True

    def result_check(self, then: Accept | None = None) -> Screen | None:
        """What a caller runs on a RESULT before believing it: in secure mode it must verify (and be
        from its ``source``); a sealed one is opened; then ``then`` decides. None: nothing to do."""
        if not self.active and then is None:
            return None

        async def screen(env: Envelope, subject: str, data: bytes,
                         headers: dict[str, str] | None) -> tuple[Envelope | None, str]:
            try:
                self.check(env, subject, data, headers)
                env = self.open(env, headers)
            except (VerificationError, SealError, EnvelopeError) as exc:
                return None, str(exc)
            if then is not None:
                ok, why = await then(env, subject, data, headers)
                if not ok:
                    return None, why
            return env, ""

        return screen

    def sign_raw(self, subject: str, data: bytes) -> dict[str, str] | None:
        """Signature headers for ready envelope bytes (a core publish), or None (no key, not an envelope)."""
        if self.signer is None:
            return None
        try:
            env = decode(data, strict_content=False)
        except EnvelopeError:
            return None
        return self.signer.headers(subject, env.id, data)

    def open(self, env: Envelope, headers: Mapping[str, str] | None) -> Envelope:
        """``env`` with sealed content opened (unchanged when not sealed); ``SealError`` when it cannot
        be, and ``EnvelopeError`` when the opened content does not fit the message type."""
        scheme = headers.get(SEALED_HEADER) if headers is not None else None
        if scheme is None:
            return env
        if scheme != SEAL_SCHEME:
            raise SealError(f"unknown seal scheme {scheme[:40]!r} (this node opens {SEAL_SCHEME})")
        key = self._mesh_seal_key if env.target.is_broadcast else self._seal_key
        if key is None:
            which = "mesh_seal_key" if env.target.is_broadcast else "seal_key"
            raise SealError(f"sealed, but this node has no {which} to open it")
        content = open_content(env.payload.content, key)
        meta = env.payload.metadata
        cleaned = check_payload(env.message_type, env.correlation_id, content, meta)
        if cleaned is not None:
            content, meta = cleaned
        return msgspec.structs.replace(env, payload=Payload(content, meta))


def outgoing_headers(env: Envelope, *, seal: bool, grant: str | None) -> dict[str, str] | None:
    """Headers a publish adds besides the signature: the seal mark, a COMMAND's or TASK's grant."""
    extra: dict[str, str] = {}
    if seal:
        extra[SEALED_HEADER] = SEAL_SCHEME
    if grant and env.message_type in ("COMMAND", "TASK"):
        extra[GRANT_HEADER] = grant
    return extra or None


def screen_record(security: MessageSecurity, rec: Record) -> Record:
    """A stored record as this client judges it: ``verified`` set, sealed content opened when it is
    for us; in secure mode a record that fails verification loses its envelope (``error`` says why),
    so readers that act on stored messages (the Doctor's last heartbeat) ignore it."""
    env = rec.envelope
    if env is None or not (security.active or is_sealed(rec.headers)):
        return rec
    try:
        checked = security.check(env, rec.subject, rec.data, rec.headers)
    except VerificationError as exc:
        return dataclasses.replace(rec, envelope=None, error=f"refused: {exc}", verified=False)
    try:
        env = security.open(env, rec.headers)
    except (SealError, EnvelopeError) as exc:
        return dataclasses.replace(rec, error=f"sealed: {exc}", verified=checked.verified)
    return dataclasses.replace(rec, envelope=env, verified=checked.verified)


def is_sealed(headers: Mapping[str, str] | None) -> bool:
    return headers is not None and SEALED_HEADER in headers

