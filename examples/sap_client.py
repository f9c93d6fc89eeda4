# examples/sap_client.py: the unmodified Synadia SDK (`pip install synadia-ai-agents`) prompts "helper"
import asyncio
import os

import nats
from synadia_ai.agents import Agents, ResponseChunk

URL = os.environ.get("NXS_URL", "nats://127.0.0.1:4222")


async def main():
    nc = await nats.connect(URL)
    agents = Agents(nc=nc)
    [helper] = [a for a in await agents.discover() if a.agent == "helper"]
    async for chunk in helper.prompt("hello"):   # ack, then the reply as it streams
        if isinstance(chunk, ResponseChunk):
            print(chunk.text, end="", flush=True)
    print()
    await agents.close()
    await nc.close()


asyncio.run(main())
