"""`nxs grant`: capability tokens (docs/security-wire.md) issued with the admin's nkey, and read back.

A client sends its token (MeshConfig.grant, $NXS_GRANT) with every COMMAND and TASK (`Nxs-Grant`).
"""

from __future__ import annotations

import json
import time

import typer

from nxs_mesh.wire.errors import MeshError

from .common import JSON_OPT, fail, new_typer, print_json, say, settings

grant_app = new_typer(help="Capability tokens: rights for a signer, signed by the admin key, expiring.",
                      no_args_is_help=True)


@grant_app.command("issue")
def grant_issue(
    ctx: typer.Context,
    sub: str = typer.Option(..., "--sub", help="Who gets the right: a node id or its U... key."),
    allow: list[str] = typer.Option(..., "--allow", "-a", help="A command name or task capability ('*' = all); repeat."),
    node: str = typer.Option("*", "--node", help="The node where it holds ('*' = every node)."),
    ttl: float = typer.Option(3600.0, "--ttl", min=1, help="Seconds until it expires."),
    as_json: bool = JSON_OPT,
) -> None:
    """Print a token signed with this config's nkey (nkey_seed: the admin's), e.g.
    `nxs grant issue --sub nxs-node-002 --allow restart --ttl 600`; send it with NXS_GRANT=<token>."""
    from nxs_mesh.wire.grants import issue_grant
    from nxs_mesh.wire.signing import load_signer

    s = settings(ctx)
    if not s.config.nkey_seed:
        fail("no nkey to sign with: set nkey_seed (NXS_NKEY_SEED) to the admin's node.nk", debug=s.debug)
    try:
        token = issue_grant(load_signer(s.config.nkey_seed), sub=sub, allow=allow, node=node, ttl=ttl)
    except MeshError as exc:
        fail(str(exc), debug=s.debug, exc=exc)
    if as_json:
        print_json({"token": token, "sub": sub, "node": node, "allow": allow, "exp": int(time.time() + ttl)})
    else:
        typer.echo(token)


@grant_app.command("show")
def grant_show(ctx: typer.Context, token: str = typer.Argument(..., help="The token."),
               as_json: bool = JSON_OPT) -> None:
    """Check a token against the trust file's admin key and print what it grants."""
    from nxs_mesh.wire.grants import read_grant
    from nxs_mesh.wire.trust import load_trust

    s = settings(ctx)
    if not s.config.trust_file:
        fail("no trust file to check the admin's signature: set trust_file (NXS_TRUST_FILE)", debug=s.debug)
    try:
        grant = read_grant(token, admin_key=load_trust(s.config.trust_file).admin, now=time.time())
    except MeshError as exc:
        fail(str(exc), debug=s.debug, exc=exc)
    data = {"sub": grant.sub, "node": grant.node, "allow": list(grant.allow), "exp": grant.exp,
            "expires_in": round(grant.exp - time.time())}
    if as_json:
        print_json(data)
    else:
        say(json.dumps(data))


def register(app: typer.Typer) -> None:
    app.add_typer(grant_app, name="grant")
