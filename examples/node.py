# examples/node.py: a worker in your own program; `python examples/node.py`, Ctrl-C (or SIGTERM) stops it
import asyncio
import os

from nxs_mesh import MeshConfig, Node

URL = os.environ.get("NXS_URL", "nats://127.0.0.1:4222")
node = Node(MeshConfig(servers=(URL,), instance_id="nxs-node-001"))  # NodeOptions(...) as 2nd argument


@node.command("greet")
async def greet(args, ctx):
    return f"hello {args}"


@node.task("resize")             # also declares the capability: this node takes resize tasks
async def resize(payload, ctx):
    return {"ok": True}


async def main():
    await node.serve()           # start, run until SIGTERM/SIGINT, then drain and stop
    # inside an agent that does its own work instead:  async with node: ...  (returns once RUNNING)


asyncio.run(main())
