"""Who is calling: bearer tokens mapped to mesh identities, read from a tokens file.

    # tokens.toml: one [[token]] per caller
    [[token]]
    token = "3c5e...long random..."            # or sha256 = "<hex digest of the token>"
    identity = "n1"                             # a name for logs and errors
    config = "secure/n1/nxs.toml"               # that identity's nxs.toml: credentials, keys, TLS
                                                # (relative to this file); without it, instance_id = identity
    agent = "planner"                           # optional agent_id

The gateway opens one ``Mesh`` per identity with that identity's own credentials, so nats-server
enforces the security issue's permission table (``deploy.permissions``) on everything a caller does
through the gateway; the gateway keeps no second copy of that table that could drift from it. A
refused operation comes back as ``PermissionDenied`` and is answered 403.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxs_mesh.config import MeshConfig, load_config
from nxs_mesh.gateway.errors import ApiError
from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import ConfigError, EnvelopeError

__all__ = ["Identity", "TokenTable", "bearer_token"]

_KEYS = frozenset({"token", "sha256", "identity", "config", "agent"})


@dataclass(frozen=True)
class Identity:
    """A caller's mesh identity: the name the tokens file gives it and the config its ``Mesh`` uses."""

    name: str
    config: MeshConfig

    def __repr__(self) -> str:
        return f"<Identity {self.name!r} {self.config.instance_id}/{self.config.agent_id}>"


@dataclass(frozen=True)
class _Entry:
    digest: bytes  # SHA-256 of the token: the table never keeps tokens in the clear
    identity: str


class TokenTable:
    """Token -> identity. ``identities`` holds each identity once, however many tokens it has."""

    def __init__(self, entries: list[_Entry], identities: dict[str, Identity]) -> None:
        self._entries, self.identities = entries, identities

    def __repr__(self) -> str:
        return f"<TokenTable [{len(self._entries)} tokens, {len(self.identities)} identities]>"

    @classmethod
    def load(cls, path: str | Path, base: MeshConfig, *, servers: tuple[str, ...] | None = None) -> TokenTable:
        """Read a tokens file. An identity without a config file is ``base`` under its own name;
        ``servers`` (the gateway's ``--url``) replaces the server list of those with one."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("tokens", f"{path}: {exc}") from None
        rows = data.get("token")
        if not isinstance(rows, list) or not rows:
            raise ConfigError("tokens", f"{path}: no [[token]] entries")
        entries: list[_Entry] = []
        identities: dict[str, Identity] = {}
        for i, row in enumerate(rows, 1):
            entry, ident = _parse_row(row, f"{path}: token {i}", path.parent, base, servers)
            if ident.name in identities and identities[ident.name].config != ident.config:
                raise ConfigError("tokens", f"{path}: token {i}: identity {ident.name!r} is configured twice, differently")
            identities.setdefault(ident.name, ident)
            entries.append(entry)
        return cls(entries, identities)

    def identify(self, token: str) -> Identity | None:
        """The identity of ``token``, or None. Compares digests in constant time, every entry."""
        digest = hashlib.sha256(token.encode()).digest()
        found: Identity | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = self.identities[entry.identity]
        return found


def _parse_row(row: Any, where: str, base_dir: Path, base: MeshConfig,
               servers: tuple[str, ...] | None) -> tuple[_Entry, Identity]:
    if not isinstance(row, Mapping):
        raise ConfigError("tokens", f"{where}: not a table")
    unknown = set(row) - _KEYS
    if unknown:
        raise ConfigError("tokens", f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    if ("token" in row) == ("sha256" in row):
        raise ConfigError("tokens", f"{where}: give exactly one of token or sha256")
    if "token" in row:
        if not isinstance(row["token"], str) or len(row["token"]) < 16:
            raise ConfigError("tokens", f"{where}: a token is a string of at least 16 characters")
        digest = hashlib.sha256(row["token"].encode()).digest()
    else:
        try:
            digest = bytes.fromhex(str(row["sha256"]))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConfigError("tokens", f"{where}: sha256 must be 64 hex digits")
    name = row.get("identity")
    try:
        check_id(name, "identity")
        agent = check_id(row.get("agent", base.agent_id), "agent")
    except EnvelopeError as exc:
        raise ConfigError("tokens", f"{where}: {exc}") from None
    assert isinstance(name, str)
    if "config" not in row:
        return _Entry(digest, name), Identity(name, base.replace(instance_id=name, agent_id=agent, inbox_prefix=None))
    file = Path(str(row["config"]))
    file = file if file.is_absolute() else base_dir / file
    cfg, _ = load_config({"servers": ",".join(servers) if servers else None}, config_file=file, env={})
    return _Entry(digest, name), Identity(name, cfg.replace(agent_id=agent) if "agent" in row else cfg)


def bearer_token(headers: Mapping[str, str], query_token: str | None = None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, else ``query_token`` (the
    ``access_token`` parameter where it is allowed); ``ApiError`` 401 when there is none."""
    challenge = {"WWW-Authenticate": 'Bearer realm="nxs"'}
    value = headers.get("authorization")
    if not value and query_token:
        return query_token
    if not value:
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'", field="Authorization",
                       headers=challenge)
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "malformed Authorization header: use 'Bearer <token>'", field="Authorization",
                       headers=challenge)
    return token.strip()
