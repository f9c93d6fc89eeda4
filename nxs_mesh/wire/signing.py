"""Envelope signatures (public contract, ``docs/security-wire.md``): ed25519 with the sender's nkey.

A signed message carries two headers:

    Nxs-Signer: the signer's nkey public key ("U...", base32, as nkeys writes it)
    Nxs-Sig:    base64url without padding of the 64-byte ed25519 signature of

        b"nxs-sig-v1\\n" + subject + b"\\n" + message_id + b"\\n" + body

``subject`` is the NATS subject it is published on (a copy moved to another subject does not
verify), ``message_id`` the envelope's ``message_id`` in canonical form (lowercase 8-4-4-4-12, the
same text as ``Nats-Msg-Id``), ``body`` the exact message bytes (JSON or MessagePack, sealed or not).

    signer = Signer(nkeys_seed)
    headers = signer.headers("nxs.chat.b._all", env.id, data)
    assert verify(headers[SIGNER_HEADER], "nxs.chat.b._all", env.id, data, headers[SIG_HEADER])

All cryptography is ``nkeys`` (which uses PyNaCl, i.e. libsodium); nothing here is hand-written
crypto, only the encoding of the public key (base32 + CRC16, the nkeys format).
"""

from __future__ import annotations

import base64
import binascii
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Final

from nxs_mesh.wire.errors import ConfigError

# nkeys and PyNaCl load on first use (a signer, a verification): a mesh without signatures never needs them.
if TYPE_CHECKING:
    import nacl.signing

__all__ = [
    "GRANT_HEADER",
    "RECORD_SCHEME",
    "SIGNER_HEADER",
    "SIG_HEADER",
    "SIG_SCHEME",
    "Signer",
    "b64url",
    "b64url_decode",
    "load_signer",
    "new_seed",
    "record_signed_by",
    "sign_record",
    "signing_input",
    "verify",
    "verify_bytes",
]

SIGNER_HEADER: Final = "Nxs-Signer"
SIG_HEADER: Final = "Nxs-Sig"
#: A capability token (``wire.grants``) travelling with a COMMAND or TASK.
GRANT_HEADER: Final = "Nxs-Grant"
SIG_SCHEME: Final = b"nxs-sig-v1"
_SIG_BYTES: Final = 64


def signing_input(subject: str, message_id: str, body: bytes) -> bytes:
    """The exact bytes an envelope signature covers."""
    return b"".join((SIG_SCHEME, b"\n", subject.encode(), b"\n", message_id.encode(), b"\n", body))


def b64url(raw: bytes) -> str:
    """base64url (RFC 4648 section 5) without ``=`` padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Inverse of ``b64url``; raises ``ValueError`` on anything else."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"not base64url: {text[:20]!r}") from None


def new_seed() -> bytes:
    """A fresh nkeys USER seed (``b"SU..."``), as ``nxs deploy secure init`` writes to ``node.nk``."""
    import nacl.signing
    import nkeys

    return bytes(nkeys.encode_seed(bytes(nacl.signing.SigningKey.generate()), nkeys.PREFIX_BYTE_USER))


class Signer:
    """Signs with one nkey seed (``b"SU..."``); ``public`` is its "U..." key.

    The signature is libsodium's ``crypto_sign`` with the seed's 64-byte secret key, called directly:
    the same ed25519 signature nkeys' ``KeyPair.sign`` makes, without its two wrapper objects per
    message. libsodium runs without the GIL (cffi releases it), so ``sign_items`` may run in a thread."""

    def __init__(self, seed: bytes) -> None:
        import nacl.bindings
        import nkeys

        try:
            self._kp = nkeys.from_seed(bytearray(seed.strip()))
            self.public: str = self._kp.public_key.decode()
            _, raw = nkeys.decode_seed(bytearray(seed.strip()))
        except (nkeys.NkeysError, ValueError, binascii.Error) as exc:
            raise ConfigError("nkey_seed", f"not an nkeys seed: {type(exc).__name__}") from None
        self._sk = nacl.bindings.crypto_sign_seed_keypair(bytes(raw))[1]
        self._crypto_sign = nacl.bindings.crypto_sign

    def __repr__(self) -> str:
        return f"<Signer {self.public[:8]}…>"

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte ed25519 signature of ``data``."""
        return self._crypto_sign(data, self._sk)[:_SIG_BYTES]

    def headers(self, subject: str, message_id: str, body: bytes) -> dict[str, str]:
        """``Nxs-Signer`` and ``Nxs-Sig`` for one message."""
        return {SIGNER_HEADER: self.public, SIG_HEADER: b64url(self.sign(signing_input(subject, message_id, body)))}

    def sign_items(self, items: list[tuple[str, bytes, dict[str, str], str]]) -> list[tuple[str, bytes, dict[str, str], str]]:
        """Add the signature headers to each (subject, body, headers, message_id) of a batch, in place;
        returns ``items``. Meant for a worker thread: nothing here touches the event loop."""
        for subject, body, headers, mid in items:
            headers[SIGNER_HEADER] = self.public
            headers[SIG_HEADER] = b64url(self.sign(signing_input(subject, mid, body)))
        return items


def load_signer(path: str | Path) -> Signer:
    """The signer of an nkeys seed file (``node.nk``), or a ``ConfigError`` naming the file."""
    try:
        seed = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError("nkey_seed", f"cannot read {path}: {exc.strerror}") from None
    # A creds file holds the seed between markers; a seed file is the seed alone.
    for line in seed.splitlines():
        if line.strip().startswith(b"SU"):
            return Signer(line.strip())
    raise ConfigError("nkey_seed", f"{path} holds no nkeys user seed (a line starting with SU)")


@functools.lru_cache(maxsize=4096)
def _verify_key(public: str) -> nacl.signing.VerifyKey:
    """The ed25519 key inside an nkeys public key ("U..."): base32 of prefix byte + 32 bytes + CRC16."""
    import nacl.signing
    import nkeys

    try:
        raw = base64.b32decode(public.encode())
    except (binascii.Error, ValueError):
        raise ValueError("not an nkeys public key (base32)") from None
    if len(raw) != 35 or not nkeys.valid_public_prefix_byte(raw[0]):
        raise ValueError("not an nkeys public key (length or prefix)")
    if int.from_bytes(raw[-2:], "little") != nkeys.crc16(bytearray(raw[:-2])):
        raise ValueError("nkeys public key checksum mismatch")
    return nacl.signing.VerifyKey(raw[1:33])


def verify_bytes(public: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public``'s ed25519 signature of ``data``; False for anything else."""
    import nacl.exceptions

    try:
        _verify_key(public).verify(data, signature)
    except (ValueError, TypeError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def verify(public: str, subject: str, message_id: str, body: bytes, sig: str) -> bool:
    """True when ``sig`` (the ``Nxs-Sig`` text) is ``public``'s signature of this message."""
    try:
        raw = b64url_decode(sig)
    except ValueError:
        return False
    return len(raw) == 64 and verify_bytes(public, signing_input(subject, message_id, body), raw)


# -- signed records (a task's claim in NXS_TASKS) -----------------------------------------------------
RECORD_SCHEME: Final = b"nxs-record-v1"
_SIG_FIELD: Final = b',"sig":"'


def sign_record(signer: Signer, key: str, body: bytes) -> bytes:
    """A JSON object ``body`` (``{...}``, ``signer`` among its fields) with ``"sig"`` added as its last
    field: the signature of ``b"nxs-record-v1\\n" + key + b"\\n" + body``, where ``key`` is the KV key it
    is stored under (so a record copied to another task does not verify)."""
    if not body.endswith(b"}"):
        raise ValueError("a record is a JSON object")
    sig = b64url(signer.sign(b"".join((RECORD_SCHEME, b"\n", key.encode(), b"\n", body))))
    return body[:-1] + _SIG_FIELD + sig.encode() + b'"}'


def record_signed_by(public: str, key: str, value: bytes) -> bool:
    """True when ``value`` (as stored) carries ``public``'s valid ``sign_record`` signature for ``key``."""
    at = value.rfind(_SIG_FIELD)
    if at < 0 or not value.endswith(b'"}'):
        return False
    body = value[:at] + b"}"
    try:
        sig = b64url_decode(value[at + len(_SIG_FIELD):-2].decode())
    except (ValueError, UnicodeDecodeError):
        return False
    return verify_bytes(public, b"".join((RECORD_SCHEME, b"\n", key.encode(), b"\n", body)), sig)
