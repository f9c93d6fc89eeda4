# examples/library.py: run it with `python examples/library.py` while `make run` serves the mesh
import asyncio
import os

from nxs_mesh import Mesh, MeshConfig, Reject, Retry

URL = os.environ.get("NXS_URL", "nats://127.0.0.1:4222")  # what `make run` serves by default


async def main():
    cfg = MeshConfig(servers=(URL,), instance_id="nxs-node-001", agent_id="main")
    async with Mesh(cfg) as mesh:
        ack = await mesh.publish("CHAT", "hello", to="nxs-node-002", priority=5, ttl=60)
        print(ack.seq, ack.duplicate)

        async def on_command(env):
            if env.content.get("command") == "later":
                raise Retry(delay=2)            # nak: redelivered in 2 s
            if env.content.get("command") == "never":
                raise Reject("unsupported")     # terminated and dead-lettered with the reason
            await mesh.reply(env, {"ok": True}) # return = ack; any other exception = retry, then DLQ

        await mesh.consume("command", on_command)
        # request/reply over COMMAND (to ourselves here, so on_command above answers it)
        result = await mesh.request("nxs-node-001", "ping", timeout=5)
        print(result.content)                   # {'ok': True}
        async for rec in mesh.tail("chat", last=10):   # ordered replay
            print(rec.seq, rec.envelope.content)


asyncio.run(main())
