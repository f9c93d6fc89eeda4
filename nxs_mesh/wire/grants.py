"""Capability tokens (public contract, ``docs/security-wire.md``): signed, expiring grants of rights.

A grant is a small JSON object signed by the admin's nkey, carried in the ``Nxs-Grant`` header of a
COMMAND or TASK:

    {"sub": "<signer key U... or node id>", "node": "<target node or *>",
     "allow": ["<command name or task capability>", ... or "*"], "exp": <Unix seconds>}

    token = base64url(json_bytes) + "." + base64url(ed25519_sign(b"nxs-grant-v1\\n" + json_bytes))

(base64url without padding). The receiver checks the admin's signature, ``exp`` against its clock,
that ``sub`` is the message's verified signer (or its node), and that ``node`` is itself or ``*``.

    token = issue_grant(admin_signer, sub="nxs-node-002", allow=["restart"], ttl=600)
    grant = read_grant(token, admin_key=trust.admin, now=time.time())
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from nxs_mesh.wire.errors import NotAuthorized
from nxs_mesh.wire.signing import Signer, b64url, b64url_decode, verify_bytes

__all__ = ["GRANT_SCHEME", "Grant", "issue_grant", "read_grant"]

GRANT_SCHEME: Final = b"nxs-grant-v1"
_MAX_TOKEN: Final = 4096


@dataclass(frozen=True)
class Grant:
    sub: str
    node: str
    allow: tuple[str, ...]
    exp: float

    def covers(self, *, signer: str, signer_node: str | None, node: str, name: str) -> bool:
        """True when this grant gives ``signer`` (of ``signer_node``) the right ``name`` on ``node``."""
        return (self.sub in (signer, signer_node) and self.node in ("*", node)
                and ("*" in self.allow or name in self.allow))


def issue_grant(admin: Signer, *, sub: str, allow: Sequence[str], node: str = "*", ttl: float = 3600.0,
                now: float | None = None) -> str:
    """A token granting ``sub`` the rights ``allow`` on ``node`` for ``ttl`` seconds, signed by ``admin``."""
    exp = int((time.time() if now is None else now) + ttl)
    body = json.dumps({"sub": sub, "node": node, "allow": list(allow), "exp": exp}, separators=(",", ":")).encode()
    sig = admin.sign(GRANT_SCHEME + b"\n" + body)
    return f"{b64url(body)}.{b64url(sig)}"


def read_grant(token: str, *, admin_key: str | None, now: float) -> Grant:
    """The grant in ``token`` when the admin signed it and it has not expired; ``NotAuthorized`` why not."""
    if admin_key is None:
        raise NotAuthorized("grant refused: the trust file names no admin key")
    if len(token) > _MAX_TOKEN or token.count(".") != 1:
        raise NotAuthorized("grant refused: not a token (base64url body '.' base64url signature)")
    body_text, sig_text = token.split(".")
    try:
        body, sig = b64url_decode(body_text), b64url_decode(sig_text)
    except ValueError:
        raise NotAuthorized("grant refused: not base64url") from None
    if not verify_bytes(admin_key, GRANT_SCHEME + b"\n" + body, sig):
        raise NotAuthorized("grant refused: not signed by the admin key")
    try:
        data = json.loads(body)
        grant = Grant(str(data["sub"]), str(data.get("node", "*")), tuple(str(a) for a in data["allow"]),
                      float(data["exp"]))
    except (ValueError, KeyError, TypeError):
        raise NotAuthorized("grant refused: its JSON lacks sub, allow or exp") from None
    if grant.exp <= now:
        raise NotAuthorized(f"grant refused: expired {now - grant.exp:.0f}s ago")
    return grant
