"""Sealed payloads (public contract, ``docs/security-wire.md``): X25519 sealed boxes (libsodium's
``crypto_box_seal``) to the target's public seal key.

A sealed envelope has the header ``Nxs-Sealed: x25519-sealedbox-v1`` and ``payload.content`` is the
standard base64 (with padding) of ``crypto_box_seal(json(content), recipient_public_key)``, where
``json(content)`` is the UTF-8 JSON of the original content. Every other field (routing: source,
target, type, priority, ttl, ids; and ``payload.metadata``, which the mesh routes on, e.g. a task's
capability) stays readable. A message to one node is sealed to that node's key in ``trust.json``;
a broadcast to the mesh key (``mesh_seal``).

    box_text = seal_content({"secret": 1}, recipient_public)
    assert open_content(box_text, recipient_private) == {"secret": 1}

Key files (``seal.key``, ``mesh-seal.key``) hold the standard base64 of the 32 raw bytes of the
X25519 private key; ``trust.json`` the standard base64 of the 32-byte public keys.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from nxs_mesh.wire.errors import ConfigError, EnvelopeError, SealError

# PyNaCl loads on first use (a seal key, a sealed message): a mesh without sealing never needs it.
if TYPE_CHECKING:
    import nacl.public

__all__ = [
    "SEALED_HEADER",
    "SEAL_SCHEME",
    "load_seal_key",
    "new_seal_key",
    "open_content",
    "public_key",
    "public_of",
    "seal_content",
]

SEALED_HEADER: Final = "Nxs-Sealed"
SEAL_SCHEME: Final = "x25519-sealedbox-v1"

_json = msgspec.json.Encoder()


def new_seal_key() -> str:
    """A fresh private seal key as its key file holds it (standard base64 of 32 bytes)."""
    import nacl.public

    return base64.b64encode(bytes(nacl.public.PrivateKey.generate())).decode()


def public_of(private_b64: str) -> str:
    """The public key (standard base64) of a private seal key text."""
    return base64.b64encode(bytes(_private(private_b64, "seal key").public_key)).decode()


def _private(text: str, what: str) -> nacl.public.PrivateKey:
    import nacl.exceptions
    import nacl.public

    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return nacl.public.PrivateKey(raw)
    except (binascii.Error, ValueError, TypeError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise ConfigError(what, "not a seal key: standard base64 of 32 bytes expected") from None


def load_seal_key(path: str | Path, setting: str = "seal_key") -> nacl.public.PrivateKey:
    """The private key in a ``seal.key`` / ``mesh-seal.key`` file."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc}") from None
    return _private(text, setting)


def public_key(text: str) -> nacl.public.PublicKey:
    """A public seal key from its standard base64 text (trust.json)."""
    import nacl.exceptions
    import nacl.public

    try:
        return nacl.public.PublicKey(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, TypeError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise ConfigError("trust_file", f"not a seal public key: {text[:20]!r}") from None


def seal_content(content: Any, recipient: nacl.public.PublicKey) -> str:
    """The sealed text that replaces ``payload.content``."""
    import nacl.public

    try:
        plain = _json.encode(content)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise EnvelopeError(f"not JSON-encodable: {exc}", "payload.content") from None
    return base64.b64encode(nacl.public.SealedBox(recipient).encrypt(plain)).decode()


def open_content(sealed: Any, key: nacl.public.PrivateKey) -> Any:
    """The original content of a sealed ``payload.content``; ``SealError`` saying why it cannot be opened."""
    import nacl.exceptions
    import nacl.public

    if not isinstance(sealed, str):
        raise SealError("sealed content must be a base64 string")
    try:
        box = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError):
        raise SealError("sealed content is not base64") from None
    try:
        plain = nacl.public.SealedBox(key).decrypt(box)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise SealError("cannot decrypt: not sealed to this node's key (or corrupted)") from None
    try:
        return msgspec.json.decode(plain)
    except msgspec.DecodeError:
        raise SealError("decrypted content is not JSON") from None
