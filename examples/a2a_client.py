# examples/a2a_client.py: the A2A SDK's own client (`pip install a2a-sdk`) talks to a mesh agent via the gateway
import asyncio
import os
import sys

import httpx
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.helpers import get_artifact_text, new_text_message
from a2a.types import Role, SendMessageRequest, TaskState

GATEWAY = os.environ.get("NXS_GATEWAY", "http://127.0.0.1:8080")
AGENT = sys.argv[1] if len(sys.argv) > 1 else "helper"


async def main():
    async with httpx.AsyncClient(timeout=60) as http:
        # discovery: GET {GATEWAY}/a2a/{AGENT}/.well-known/agent-card.json
        card = await A2ACardResolver(http, f"{GATEWAY}/a2a/{AGENT}").get_agent_card()
        print("skills:", ", ".join(skill.id for skill in card.skills))
        client = await create_client(card, ClientConfig(streaming=True, httpx_client=http))
        message = new_text_message("hello", context_id="my-conversation", role=Role.ROLE_USER)
        async for event in client.send_message(SendMessageRequest(message=message)):
            if event.HasField("artifact_update"):          # the agent's answer
                print("answer:", get_artifact_text(event.artifact_update.artifact))
            elif event.HasField("status_update"):          # working, then completed (or failed, canceled)
                print("state:", TaskState.Name(event.status_update.status.state))
        await client.close()


asyncio.run(main())
