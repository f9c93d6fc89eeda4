"""The Python side of the plugin's tests: a real nxs-mesh client or node, driven from Node's test runner.

    peer.py ask URL FROM TO_INSTANCE TO_AGENT TEXT [--timeout S] [--keys DIR]   one CHAT, waits for its RESULT
    peer.py chat URL FROM TO_INSTANCE TO_AGENT TEXT                            one CHAT, no reply wanted
    peer.py serve URL INSTANCE [--keys DIR] [--handoff] [--agent ID]...
                                                a Node: command "echo", task capability "upper"; "ready" when up;
                                                --handoff: with a HandoffService (and its "handoff" command)
    peer.py agent URL AGENT                     the agent's registry record (owner, state, epoch)
    peer.py init URL                            the mesh's streams (what `nxs init` does)
    peer.py keys DIR NODE...                    mesh keys (trust.json, nodes/<id>/node.nk) for secure tests

Every command prints one JSON line. ``serve`` runs until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from nxs_mesh import Mesh, MeshConfig, Node
from nxs_mesh.node.handoff import HandoffService
from nxs_mesh.node.options import NodeOptions
from nxs_mesh.testing.keys import MeshKeys, write_mesh_keys
from nxs_mesh.wire.errors import MeshError

DATA = {"dir": ""}  # a fresh temporary directory per run (the mesh's outbox lives there)


def config(url: str, instance: str, keys: str | None) -> MeshConfig:
    base = MeshConfig(servers=(url,), instance_id=instance, data_dir=DATA["dir"])
    return MeshKeys(Path(keys)).config(base, instance) if keys else base


def out(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)  # noqa: T201 - the test reads this line


async def ask(a: argparse.Namespace) -> None:
    async with Mesh(config(a.url, a.sender, a.keys)) as mesh:
        corr = str(uuid.uuid4())
        try:
            _, env = await mesh.call("CHAT", a.text, correlation_id=corr, timeout=a.timeout,
                                     waiting_for=f"the answer of {a.to}/{a.agent}", to=a.to, agent=a.agent)
        except MeshError as exc:
            out({"error": str(exc), "kind": type(exc).__name__})
            return
        out({"content": env.content, "from": f"{env.source.instance_id}/{env.source.agent_id}",
             "correlation_id": env.correlation_id, "sent_correlation_id": corr, "type": env.message_type,
             "metadata": env.payload.metadata})


async def chat(a: argparse.Namespace) -> None:
    async with Mesh(config(a.url, a.sender, a.keys)) as mesh:
        ack = await mesh.publish("CHAT", a.text, to=a.to, agent=a.agent)
        out({"seq": ack.seq})


async def serve(a: argparse.Namespace) -> None:
    node = Node(config(a.url, a.instance, a.keys), NodeOptions(agents=tuple(a.agent)))
    if a.handoff:
        node.parts.append(HandoffService())

    @node.command("echo")
    async def echo(args: Any, ctx: Any) -> Any:
        return {"echo": args}

    @node.task("upper")
    async def upper(payload: Any, ctx: Any) -> Any:
        return str(payload).upper()

    async with node:
        out({"ready": a.instance})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin


async def agent(a: argparse.Namespace) -> None:
    async with Mesh(config(a.url, "openclaw-test-agent", None)) as mesh:
        rec = await mesh.agents.get(a.agent)
        out({} if rec is None else {"owner": rec.owner, "state": str(rec.state), "epoch": rec.epoch})


async def init(a: argparse.Namespace) -> None:
    async with Mesh(config(a.url, "openclaw-test-init", None)) as mesh:
        out({"streams": [r.stream for r in await mesh.ensure_streams()]})


def keys(a: argparse.Namespace) -> None:
    k = write_mesh_keys(a.dir, a.nodes)
    out({"trust": str(k.trust_file), "seeds": {n: str(k.node_dir(n) / "node.nk") for n in a.nodes}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("ask", "chat"):
        s = sub.add_parser(name)
        for arg in ("url", "sender", "to", "agent", "text"):
            s.add_argument(arg)
        s.add_argument("--timeout", type=float, default=30)
        s.add_argument("--keys")
    s = sub.add_parser("serve")
    s.add_argument("url")
    s.add_argument("instance")
    s.add_argument("--keys")
    s.add_argument("--handoff", action="store_true")
    s.add_argument("--agent", action="append", default=[])
    s = sub.add_parser("agent")
    s.add_argument("url")
    s.add_argument("agent")
    sub.add_parser("init").add_argument("url")
    s = sub.add_parser("keys")
    s.add_argument("dir")
    s.add_argument("nodes", nargs="+")
    a = p.parse_args()
    if a.cmd == "keys":
        keys(a)
        return
    with tempfile.TemporaryDirectory(prefix="nxs-openclaw-peer-") as DATA["dir"]:
        asyncio.run({"ask": ask, "chat": chat, "serve": serve, "agent": agent, "init": init}[a.cmd](a))


if __name__ == "__main__":
    main()
