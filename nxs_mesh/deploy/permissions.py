"""Least privilege, enforced by nats-server: what each node's identity may publish and subscribe.

A node may publish its own heartbeat and status and what nodes legitimately send (chat, commands,
tasks, results, sync, alerts, dead letters), read its own commands and broadcasts through its own
durable consumer, read the shared presence and result streams, and take tasks. It may not create,
update, purge or delete streams, buckets or command consumers: the ``admin`` identity does that
(``nxs init`` provisions every trusted node's command consumer). JetStream's consumer API carries
no filter a permission could check when a consumer has several filters, so a node that could create
consumers on NXS_COMMAND could read another node's commands; hence the provisioning by admin.

    perms = node_permissions("n1")           # {"publish": {"allow": [...]}, "subscribe": {...}}
    text = authorization_block(trust)        # the nats-server `authorization { users = [...] }`

An MQTT **device** (``device_permissions``) is a user mapped from its client certificate
(``verify_and_map`` on the MQTT listener), allowed on MQTT connections only. It may publish its own
heartbeat and status and RESULTs (``nxs.result.*``: one token, a result subject is the correlation id,
which the device learns only from its own commands), and subscribe to its own command subject only.
Because nodes may publish only their *own* heartbeat and status, an unsigned envelope on
``nxs.heartbeat.<device>`` can only come from that device: receivers rely on it (``wire.trust``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from nxs_mesh.client.consumer import durable_name
from nxs_mesh.client.handoff import sync_durable
from nxs_mesh.wire import subjects

__all__ = ["BUCKETS", "DEVICE_URI", "READABLE_STREAMS", "authorization_block", "command_durables",
           "device_permissions", "device_user", "node_permissions"]

#: Buckets every node reads and writes (task claims, exactly-once records, doctor leases, files).
BUCKETS: Final = ("NXS_TASKS", "NXS_ONCE", "NXS_DOCTORS", "NXS_AGENTS", "NXS_FILES")
#: Streams whose contents are mesh-wide by nature: anyone in the mesh may read them.
READABLE_STREAMS: Final = ("NXS_HEARTBEAT", "NXS_STATUS", "NXS_ALERT", "NXS_RESULT", "NXS_TASK")
_SENDS: Final = ("chat", "command", "task", "result", "sync", "alert", "dlq")
#: The URI SAN of a device's certificate is this + its id; it is also the device's user name.
DEVICE_URI: Final = "nxs-device:"


def device_user(device: str) -> str:
    """The nats-server user a device's certificate maps to (its URI SAN)."""
    return DEVICE_URI + device


def device_permissions(device: str) -> dict[str, Any]:
    """What MQTT device ``device`` may do: publish its own presence and RESULTs, read its own commands.

    MQTT's ``nxs/command/<id>/#`` subscribes both ``nxs.command.<id>.>`` and ``nxs.command.<id>``. No
    ``$MQTT.>`` grant: nats-server since nats-io/nats-server#7637 (December 2025; the 2.15 tests run)
    lets an MQTT client use its own session/QoS subjects implicitly; an older server needs
    ``$MQTT.>``/``$MQTT_sub.>`` added, which would also open other sessions' internals to the device."""
    command = subjects.command(device).rsplit(".", 2)[0]  # nxs.command.<id>
    return {"publish": {"allow": [subjects.heartbeat(device), subjects.status(device), subjects.result("*")]},
            "subscribe": {"allow": [f"{command}.>", command]}}


def command_durables(node: str) -> tuple[str, ...]:
    """The node's command consumer (provisioned by admin, see ``node.provision``)."""
    return (durable_name("command", node),)


def _js_api(node: str) -> list[str]:
    api = "$JS.API"
    allow = [f"{api}.INFO", f"{api}.STREAM.INFO.*", f"{api}.STREAM.NAMES", f"{api}.STREAM.LIST",
             f"{api}.CONSUMER.INFO.>"]
    readable = [*READABLE_STREAMS, *(f"KV_{b}" for b in BUCKETS), *(f"OBJ_{b}" for b in BUCKETS)]
    for stream in readable:
        allow += [f"{api}.STREAM.MSG.GET.{stream}", f"{api}.DIRECT.GET.{stream}", f"{api}.DIRECT.GET.{stream}.>",
                  f"{api}.CONSUMER.CREATE.{stream}", f"{api}.CONSUMER.CREATE.{stream}.>",
                  f"{api}.CONSUMER.DURABLE.CREATE.{stream}.>", f"{api}.CONSUMER.MSG.NEXT.{stream}.>"]
        if stream != "NXS_TASK":  # only ephemeral readers live there; task consumers are shared work
            allow.append(f"{api}.CONSUMER.DELETE.{stream}.>")
    allow += [f"{api}.CONSUMER.MSG.NEXT.NXS_COMMAND.{d}" for d in command_durables(node)]
    # Handoff (admin provisions the consumers, as for commands): the node's own SYNC consumer, and every
    # agent's CHAT consumer (``agent-<agent>``), since any node may come to own any agent. The server cannot
    # tell an agent's owner from another node, so who pulls is the registry's rule, not a permission's.
    allow += [f"{api}.CONSUMER.MSG.NEXT.NXS_SYNC.{sync_durable(node)}", f"{api}.CONSUMER.MSG.NEXT.NXS_CHAT.*"]
    # Files are shared state: removing one purges its chunks' subject and deletes its meta message.
    allow += [f"{api}.STREAM.PURGE.OBJ_NXS_FILES", f"{api}.STREAM.MSG.DELETE.OBJ_NXS_FILES"]
    return allow


def node_permissions(node: str, inbox: str | None = None) -> dict[str, Any]:
    """The nats-server permissions of node ``node`` (its inbox defaults to ``_INBOX_nxs.<node>``)."""
    inbox = inbox or f"_INBOX_nxs.{node}"
    root = subjects.ROOT
    me = subjects.heartbeat(node).rsplit(".", 1)[1]  # the node id as a subject token
    publish = [subjects.heartbeat(node), subjects.status(node), *(f"{root}.{k}.>" for k in _SENDS),
               "$JS.ACK.>", *(f"$KV.{b}.>" for b in BUCKETS), *(f"$O.{b}.>" for b in BUCKETS), *_js_api(node)]
    subscribe = [f"{inbox}.>", f"{root}.heartbeat.*", f"{root}.status.*", f"{root}.alert.>", f"{root}.result.>",
                 f"{root}.chat.{me}.>", f"{root}.chat._all.>", f"{root}.command.{me}.>", f"{root}.command._all.>",
                 f"{root}.sync.{me}.>", f"{root}.sync._all.>"]
    # allow_responses: a node may answer a core request made to it (mesh.reply), on that reply only.
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe},
            "allow_responses": {"max": 1, "expires": "10m"}}


def authorization_block(trust: Mapping[str, Any], *, indent: str = "") -> str:
    """``authorization { users = [...] }``: each trusted node by its nkey with its permissions, admin
    with all rights, and each device by its certificate's mapped name, on MQTT only. Anyone else (no
    nkey, a revoked one, an unpinned certificate) is refused at connect."""
    users: list[dict[str, Any]] = [{"nkey": trust["admin"]["sign"]}]
    for node, ident in sorted(trust["nodes"].items()):
        users.append({"nkey": ident["sign"], "permissions": node_permissions(node)})
    for device in sorted(trust.get("devices") or {}):
        users.append({"user": device_user(device), "permissions": device_permissions(device),
                      "allowed_connection_types": ["MQTT"]})
    body = ",\n".join(f"{indent}    {json.dumps(u)}" for u in users)
    return f"{indent}authorization {{\n{indent}  users = [\n{body}\n{indent}  ]\n{indent}}}"
