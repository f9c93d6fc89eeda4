"""Configuration: flags > environment (``NXS_*``) > TOML file > defaults, with the source of each value.

>>> cfg = MeshConfig(servers=("nats://127.0.0.1:4222",), instance_id="nxs-node-001")
>>> cfg.instance_id
'nxs-node-001'
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nxs_mesh.wire.envelope import check_id
from nxs_mesh.wire.errors import ConfigError, EnvelopeError

__all__ = ["DEFAULT_URL", "ConfigSource", "MeshConfig", "default_instance_id", "find_config_file", "load_config"]

DEFAULT_URL = "nats://127.0.0.1:4222"


def default_instance_id() -> str:
    """The host name, cut to a valid id (so `nxs` works on a fresh machine with no configuration)."""
    name = re.sub(r"[^A-Za-z0-9_:-]", "-", socket.gethostname().split(".")[0])[:64]
    return name if name and name != "_all" else "nxs-local"


@dataclass(frozen=True)
class MeshConfig:
    """Everything a client needs to join the mesh. Immutable; build a new one to change it."""

    servers: tuple[str, ...] = (DEFAULT_URL,)
    instance_id: str = field(default_factory=default_instance_id)
    agent_id: str = "main"
    location: str = ""
    # Security: all optional, so adding authorization later needs no API change.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    creds: str | None = None
    nkey_seed: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    # Message security (issue 12): the mesh's public keys, this node's seal key, the mesh-wide seal key,
    # and whether unsigned or unverifiable envelopes are refused (dead-lettered) instead of accepted.
    trust_file: str | None = None
    seal_key: str | None = None
    mesh_seal_key: str | None = None
    secure: bool = False
    policy_file: str | None = None  # who may run which command/task here (node.authorize); may be nxs.toml
    grant: str | None = None  # a capability token sent with this client's COMMANDs and TASKs (wire.grants)
    inbox_prefix: str | None = None  # default: _INBOX_nxs.<instance_id>, so per-node permissions work
    # JetStream assets: replicas None = min(3, cluster size).
    replicas: int | None = None
    data_dir: str = ".nxs"
    connect_timeout: float = 2.0
    # Consumers
    ack_wait: float = 30.0
    max_deliver: int = 5
    # The embedded server (`nxs up`)
    port: int = 4222
    monitor_port: int = 8222

    def __post_init__(self) -> None:
        if isinstance(self.servers, str):
            object.__setattr__(self, "servers", tuple(s.strip() for s in self.servers.split(",") if s.strip()))
        if not self.servers:
            raise ConfigError("servers", "at least one server URL is needed")
        for url in self.servers:
            if "://" not in url:
                raise ConfigError("servers", f"{url!r} is not a URL (expected e.g. nats://host:4222)")
        try:
            check_id(self.instance_id, "instance_id")
            check_id(self.agent_id, "agent_id")
        except EnvelopeError as exc:
            raise ConfigError(exc.field or "id", exc.reason) from None
        if self.replicas is not None and not 1 <= self.replicas <= 5:
            raise ConfigError("replicas", f"{self.replicas} is out of range 1..5")
        if self.max_deliver < 1:
            raise ConfigError("max_deliver", "must be at least 1")
        if self.ack_wait <= 0:
            raise ConfigError("ack_wait", "must be positive seconds")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert", "tls_cert and tls_key go together")

    @property
    def inbox(self) -> str:
        return self.inbox_prefix or f"_INBOX_nxs.{self.instance_id}"

    def replace(self, **changes: Any) -> MeshConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self, *, redact: bool = True) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["servers"] = list(self.servers)
        if redact:
            for secret in ("password", "token"):
                if out[secret]:
                    out[secret] = "***"
        return out


# Environment names; NXS_URL is the historical name for the server list.
_ENV_NAMES = {f.name: f"NXS_{f.name.upper()}" for f in fields(MeshConfig)}
_ENV_NAMES["servers"] = "NXS_URL"

ConfigSource = str  # "flag", "env:NXS_URL", "file:/path/nxs.toml" or "default"


def find_config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError("config", f"{path} does not exist")
        return path
    if env.get("NXS_CONFIG"):
        path = Path(env["NXS_CONFIG"])
        if not path.is_file():
            raise ConfigError("NXS_CONFIG", f"{path} does not exist")
        return path
    for candidate in (Path("nxs.toml"), Path.home() / ".config" / "nxs" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _coerce(name: str, raw: Any) -> Any:
    kind = {f.name: f.type for f in fields(MeshConfig)}[name]
    try:
        if name == "servers":
            if isinstance(raw, str):
                return tuple(s.strip() for s in raw.split(",") if s.strip())
            return tuple(str(s) for s in raw)
        if "int" in str(kind) and raw is not None and raw != "":
            return int(raw)
        if "float" in str(kind):
            return float(raw)
        if "bool" in str(kind) and not isinstance(raw, bool):
            text = str(raw).strip().lower()
            if text not in _BOOLS:
                raise ValueError(text)
            return _BOOLS[text]
    except (TypeError, ValueError):
        raise ConfigError(name, f"{raw!r} is not a valid {kind}") from None
    return None if raw == "" else raw


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[MeshConfig, dict[str, ConfigSource]]:
    """Merge flags > environment > TOML file > defaults; return the config and where each value came from."""
    env = os.environ if env is None else env
    known = {f.name for f in fields(MeshConfig)}
    values: dict[str, Any] = {}
    sources: dict[str, ConfigSource] = dict.fromkeys(known, "default")

    path = find_config_file(config_file, env)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("config", f"{path}: {exc}") from None
        data = data.get("mesh", data)
        for key, raw in data.items():
            name = "servers" if key in ("url", "urls") else key
            if name not in known:
                raise ConfigError(f"{path}:{key}", f"unknown setting; known: {', '.join(sorted(known))}")
            values[name] = _coerce(name, raw)
            sources[name] = f"file:{path}"
    for name, var in _ENV_NAMES.items():
        if env.get(var):
            values[name] = _coerce(name, env[var])
            sources[name] = f"env:{var}"
    for name, raw in (flags or {}).items():
        if raw is not None:
            if name not in known:
                raise ConfigError(name, "unknown setting")
            values[name] = _coerce(name, raw)
            sources[name] = "flag"
    return MeshConfig(**values), sources
