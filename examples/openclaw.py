# examples/openclaw.py: ask the OpenClaw agent behind gateway "gw-laptop" over the mesh; prints its answer
import asyncio
import os
import uuid

from nxs_mesh import Mesh, MeshConfig

URL = os.environ.get("NXS_URL", "nats://127.0.0.1:4222")
GATEWAY = os.environ.get("OPENCLAW_INSTANCE", "gw-laptop")  # channels.nxs.accounts.<id>.instanceId


async def main():
    async with Mesh(MeshConfig(servers=(URL,), instance_id="phone")) as mesh:  # must be in allowFrom
        _, answer = await mesh.call(
            "CHAT", "What is on my calendar today?", correlation_id=str(uuid.uuid4()),
            timeout=120, waiting_for="the OpenClaw agent", to=GATEWAY, agent="main",
        )
        print(answer.content)    # a RESULT: the agent's reply, correlated to this CHAT


asyncio.run(main())
