"""Test keys in the layout ``nxs deploy secure init`` writes (the message-security part of it):

    DIR/trust.json
    DIR/nodes/<id>/node.nk     nkeys user seed (b"SU...")
    DIR/nodes/<id>/seal.key    standard base64 of the 32-byte X25519 private key
    DIR/admin/node.nk
    DIR/mesh-seal.key

    keys = write_mesh_keys(tmp_path / "sec", ["a", "b"])
    cfg_a = keys.config(base_config, "a")            # secure=True, signing and sealing keys of node a
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nxs_mesh.config import MeshConfig
from nxs_mesh.wire.sealing import new_seal_key, public_of
from nxs_mesh.wire.signing import Signer, new_seed

__all__ = ["MeshKeys", "write_mesh_keys"]


@dataclass(frozen=True)
class MeshKeys:
    root: Path

    @property
    def trust_file(self) -> Path:
        return self.root / "trust.json"

    def node_dir(self, node: str) -> Path:
        return self.root / "admin" if node == "admin" else self.root / "nodes" / node

    def signer(self, node: str) -> Signer:
        return Signer((self.node_dir(node) / "node.nk").read_bytes())

    def config(self, base: MeshConfig, node: str, *, secure: bool = True, **changes: object) -> MeshConfig:
        """``base`` as node ``node`` (or ``"admin"``) with its key files and the trust file."""
        d = self.node_dir(node)
        seal = d / "seal.key"
        return base.replace(
            instance_id=node, nkey_seed=str(d / "node.nk"), trust_file=str(self.trust_file),
            seal_key=str(seal) if seal.exists() else None, mesh_seal_key=str(self.root / "mesh-seal.key"),
            secure=secure, **changes,
        )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_mesh_keys(root: str | os.PathLike[str], nodes: list[str]) -> MeshKeys:
    """Fresh nkeys and seal keys for ``nodes`` and an admin, and the trust file naming them all."""
    base = Path(root)
    trust: dict[str, object] = {"version": 1, "nodes": {}}
    for node in [*nodes, "admin"]:
        seed = new_seed()
        d = base / "admin" if node == "admin" else base / "nodes" / node
        _write(d / "node.nk", seed + b"\n")
        public = Signer(seed).public
        if node == "admin":
            trust["admin"] = {"sign": public}
            continue
        seal = new_seal_key()
        _write(d / "seal.key", seal.encode() + b"\n")
        trust["nodes"][node] = {"sign": public, "seal": public_of(seal)}  # type: ignore[index]
    mesh_seal = new_seal_key()
    _write(base / "mesh-seal.key", mesh_seal.encode() + b"\n")
    trust["mesh_seal"] = public_of(mesh_seal)
    _write(base / "trust.json", json.dumps(trust, indent=2).encode())
    return MeshKeys(base)
