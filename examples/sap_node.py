# examples/sap_node.py: mesh agent "helper" behind the Synadia front door; `python examples/sap_node.py`
import asyncio
import os

from nxs_mesh import MeshConfig, Node, NodeOptions
from nxs_mesh.node.sap import SapFrontDoor, sap_send

URL = os.environ.get("NXS_URL", "nats://127.0.0.1:4222")
node = Node(MeshConfig(servers=(URL,), instance_id="nxs-node-002"), NodeOptions(agents=("helper",)))


@node.command("prompt")                     # what a Synadia-protocol prompt runs
async def prompt(args, ctx):
    await sap_send(ctx, "thinking... ")     # a chunk streamed to the caller now
    return f"you said: {args['prompt']}"    # the last chunk, and the RESULT of the COMMAND


SapFrontDoor.attach(node)                   # what `nxs node run --sap` does
asyncio.run(node.serve())                   # Ctrl-C (or SIGTERM) stops it
