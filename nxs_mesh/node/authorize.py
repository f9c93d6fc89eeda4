"""Who may run which command or task capability on this node: a policy in the node's config, or a
signed, expiring grant (``wire.grants``) carried with the message.

The policy is a TOML file (``MeshConfig.policy_file``; it may be the node's ``nxs.toml``, whose
``[mesh]`` table the config loader reads and whose ``[policy]`` table this module reads):

    [[policy.allow]]
    signer = "admin"            # the admin key; or a node id, a "U..." key, or "*" (any verified signer)
    commands = ["*"]
    tasks = ["*"]

    [[policy.allow]]
    signer = "nxs-node-002"
    commands = ["ping", "status", "restart"]

A right is given when any rule matching the signer lists the name (or "*"), or when a grant signed by
the admin covers the signer, this node and the name. Checked only when the node runs ``secure`` or has
a policy file; an open node with neither runs what it is sent, as before. Without a policy file a
secure node uses ``DEFAULT_POLICY``: the admin may do anything, any other node of the trust file the
read-only commands and every task capability (tasks are shared work).
"""

from __future__ import annotations

import logging
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nxs_mesh.client.delivery import Delivery
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.wire.envelope import Envelope
from nxs_mesh.wire.errors import ConfigError, NotAuthorized
from nxs_mesh.wire.grants import read_grant
from nxs_mesh.wire.signing import GRANT_HEADER

__all__ = ["DEFAULT_POLICY", "Authorizer", "Policy", "Rule", "load_policy"]

log = logging.getLogger("nxs_mesh.node.authorize")


@dataclass(frozen=True)
class Rule:
    signer: str  # "admin", "*", a node id or a "U..." key
    commands: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()

    def names(self, kind: str) -> tuple[str, ...]:
        return self.commands if kind == "command" else self.tasks


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]

    def allows(self, kind: str, name: str, *, signer: str, node: str | None, admin: bool) -> bool:
        for rule in self.rules:
            who = rule.signer
            if who == "*" or who == signer or (who == "admin" and admin) or (node is not None and who == node):
                names = rule.names(kind)
                if "*" in names or name in names:
                    return True
        return False


# cancel-task is a nudge: the worker acts only on a signed ``cancelled`` record by the task's submitter or
# the admin (``client.task_states``), so any signer may send it.
DEFAULT_POLICY: Final = Policy((Rule("admin", ("*",), ("*",)),
                                Rule("*", ("ping", "status", "echo", "cancel-task"), ("*",))))


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("policy_file", f"{where}: expected a list of names")
    return tuple(value)


def load_policy(path: str | Path) -> Policy:
    """The ``[policy]`` table (or the top level) of a TOML file; ``ConfigError`` naming what is wrong."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("policy_file", f"{path}: {exc}") from None
    table = data.get("policy", data)
    rules = []
    for i, raw in enumerate(table.get("allow") or []):
        where = f"{path}: policy.allow[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("signer"), str):
            raise ConfigError("policy_file", f"{where}: needs signer = \"admin\" | \"*\" | node id | U... key")
        rules.append(Rule(raw["signer"], _names(raw.get("commands"), where), _names(raw.get("tasks"), where)))
    return Policy(tuple(rules))


class Authorizer:
    """The rights check of one node (``refusal`` returns why not, or None when allowed)."""

    def __init__(self, mesh: Mesh, policy: Policy | None = None) -> None:
        cfg = mesh.config
        self.node, self.security = cfg.instance_id, mesh.security
        if policy is None and cfg.policy_file:
            policy = load_policy(cfg.policy_file)
        self.enabled = cfg.secure or policy is not None
        self.policy = policy or DEFAULT_POLICY
        self.refused = 0

    def __repr__(self) -> str:
        return f"<Authorizer {self.node} {'on' if self.enabled else 'off'} [{len(self.policy.rules)} rules]>"

    def refusal(self, kind: str, name: str, env: Envelope, delivery: Delivery | None) -> str | None:
        """None when the message's verified signer may run ``kind`` ``name`` here; else the reason."""
        if not self.enabled:
            return None
        signer = delivery.signer if delivery is not None else None
        try:
            self._check(kind, name, signer, delivery.headers.get(GRANT_HEADER) if delivery is not None else None)
        except NotAuthorized as exc:
            self.refused += 1
            log.warning("refused %s %r from %s (message %s): %s", kind, name, env.source.instance_id, env.id, exc)
            return str(exc)
        return None

    def _check(self, kind: str, name: str, signer: str | None, grant: str | None) -> None:
        trust = self.security.trust
        if signer is None or trust is None:
            raise NotAuthorized(f"not authorized: {kind} {name!r} from an unverified sender")
        node, admin = trust.node_of(signer), trust.is_admin(signer)
        if self.policy.allows(kind, name, signer=signer, node=node, admin=admin):
            return
        why = "no policy entry"
        if grant:
            try:
                if read_grant(grant, admin_key=trust.admin, now=time.time()).covers(
                        signer=signer, signer_node=node, node=self.node, name=name):
                    return
                why = "its grant does not cover it"
            except NotAuthorized as exc:
                why = str(exc)
        who = f"node {node!r}" if node else ("admin" if admin else f"key {signer[:12]}…")
        raise NotAuthorized(f"not authorized: {who} may not run {kind} {name!r} on {self.node} ({why})")
