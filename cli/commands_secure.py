"""`nxs deploy secure`: the mesh's identities (CA, node certificates, nkeys, seal keys) on disk.

From an open lab to a secured mesh, in order (deploy/README.md has the whole walk-through):

    nxs deploy secure init secure/ --host n1=100.64.0.1 --host n2=100.64.0.2 --host n3=100.64.0.3
    nxs deploy render --secure secure/ --host n1=100.64.0.1 ... --install-dir /etc/nxs -o deploy/generated
    # copy secure/nodes/<host>/ to /etc/nxs on each host, deploy/generated/<host>.conf as its server config
    nxs --config secure/admin/nxs.toml init     # admin provisions streams, buckets, node consumers
    nxs --config /etc/nxs/nxs.toml node run     # on each host

MQTT devices (they cannot sign; each gets a client certificate mapped to its own least-privileged user):

    nxs deploy secure init secure/ --device sensor-1       # secure/devices/sensor-1/: copy it to the device
    nxs deploy render --secure secure/ --mqtt 8883 ...     # mqtts:// for device certificates only
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from nxs_mesh.wire.errors import MeshError

from .common import console, err_console, fail, new_typer, print_json, settings
from .tables import Col, fitted

secure_app = new_typer(help="Mesh identities: CA, per-node certificates, nkeys and seal keys.",
                       no_args_is_help=True)
JSON_OPT = typer.Option(False, "--json", help="Machine-readable output (one JSON document).")
DIR_ARG = typer.Argument(..., help="The secure directory (created if missing; keep it private).")


def _identities(root: Path) -> list[dict[str, Any]]:
    from nxs_mesh.deploy.identity import ADMIN, SecureLayout, load_trust

    layout = SecureLayout(root)
    trust = load_trust(layout.trust)
    rows = [{"name": n, "role": "node", "sign": i["sign"], "cert_sha256": i["cert_sha256"],
             "dir": str(layout.node_dir(n))} for n, i in sorted(trust["nodes"].items())]
    rows.append({"name": ADMIN, "role": "admin", "sign": trust["admin"]["sign"],
                 "cert_sha256": trust["admin"]["cert_sha256"], "dir": str(layout.node_dir(ADMIN))})
    rows += [{"name": d, "role": "device", "sign": None, "cert_sha256": i["cert_sha256"],
              "dir": str(layout.device_dir(d))} for d, i in sorted((trust.get("devices") or {}).items())]
    return rows


def _show(root: Path, as_json: bool, note: str) -> None:
    rows = _identities(root)
    if as_json:
        print_json({"dir": str(root.absolute()), "identities": rows})
        return
    console.print(fitted([Col("identity"), Col("role"), Col("nkey"), Col("directory", wrap=True, drop=1)],
                         [[r["name"], r["role"], r["sign"][:12] + "…" if r["sign"] else "- (certificate)", r["dir"]]
                          for r in rows],
                         title=f"mesh identities in {root}"))
    if note:
        err_console.print(note)


def _change(ctx: typer.Context, action: Callable[[], object]) -> None:
    """Run a change to the secure directory; a MeshError is one line on stderr, exit 1."""
    try:
        action()
    except MeshError as exc:
        fail(str(exc), debug=settings(ctx).debug, exc=exc)


@secure_app.command("init")
def secure_init(
    ctx: typer.Context,
    directory: Path = DIR_ARG,
    host: list[str] = typer.Option(None, "--host", help="NAME=ADDRESS of a mesh host (its certificate's "
                                                        "address); repeat. Existing identities are kept."),
    install_dir: str = typer.Option(None, "--install-dir",
                                    help="Where each node's directory will live on its host (e.g. /etc/nxs); "
                                         "the nxs.toml files point there [default: this directory]."),
    device: list[str] = typer.Option(None, "--device", help="ID of an MQTT device: a client certificate in "
                                                            "DIR/devices/ID, mapped to a user that may publish only "
                                                            "its own heartbeat, status and results; repeat."),
    as_json: bool = JSON_OPT,
) -> None:
    """Create the mesh CA (once), the admin identity (once) and each host's and device's identity that is
    missing."""
    from nxs_mesh.deploy.identity import init_identities
    from nxs_mesh.deploy.tailscale import parse_host_flag

    _change(ctx, lambda: init_identities(directory, [parse_host_flag(h) for h in host or []],
                                         install_dir=install_dir, devices=device or ()))
    _show(directory, as_json, "keys are 0600; copy nodes/<host>/ to each host, keep ca.key and admin/ off them; "
                              "next: `nxs deploy render --secure DIR --host ...`")


@secure_app.command("rotate")
def secure_rotate(
    ctx: typer.Context,
    directory: Path = DIR_ARG,
    name: str = typer.Argument(..., help="The node (or `admin`) whose keys to replace."),
    host: str = typer.Option(None, "--host", help="NAME=ADDRESS for the new certificate's address."),
    as_json: bool = JSON_OPT,
) -> None:
    """New certificate, nkey and seal key for one identity; the old ones become revoked."""
    from nxs_mesh.deploy.identity import rotate_identity
    from nxs_mesh.deploy.tailscale import parse_host_flag

    _change(ctx, lambda: rotate_identity(directory, name, parse_host_flag(host) if host else None))
    _show(directory, as_json, f"rotated {name}: copy nodes/{name}/ to its host, re-render the server configs "
                              "and reload every server (`nats-server --signal reload`)")


@secure_app.command("revoke")
def secure_revoke(
    ctx: typer.Context,
    directory: Path = DIR_ARG,
    name: str = typer.Argument(..., help="The node or device whose identity to revoke."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stop trusting a node or device: once the configs are re-rendered and servers reloaded (restarted, for
    a device) it cannot connect."""
    from nxs_mesh.deploy.identity import revoke_identity

    was: list[dict[str, Any]] = []
    _change(ctx, lambda: was.append(revoke_identity(directory, name)))
    device = bool(was) and "sign" not in was[0]  # a device has a certificate only
    _show(directory, as_json, f"revoked {name}: re-render with `nxs deploy render --secure` and " +
          ("restart the servers with the MQTT listener (nats-server does not reload MQTT settings)" if device
           else "reload every server; a reload disconnects it at once"))


@secure_app.command("show")
def secure_show(directory: Path = DIR_ARG, as_json: bool = JSON_OPT) -> None:
    """List the trusted identities."""
    try:
        _show(directory, as_json, "")
    except MeshError as exc:
        fail(str(exc))


def register(app: typer.Typer) -> None:
    from .commands_cluster import deploy_app

    deploy_app.add_typer(secure_app, name="secure")
