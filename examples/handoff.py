# examples/handoff.py: move an agent from one node to another; `python examples/handoff.py` while `make run` serves
import asyncio
import os
import tempfile

from nxs_mesh import Mesh, MeshConfig, Node, NodeOptions
from nxs_mesh.node.handoff import HandoffContext, HandoffService

URL = os.environ.get("NXS_URL", "nats://127.0.0.1:4222")  # what `make run` serves by default
AGENT = "agent:research"


def node(name: str, data: str, *agents: str) -> tuple[Node, HandoffService]:
    config = MeshConfig(servers=(URL,), instance_id=name, data_dir=data)
    n = Node(config, NodeOptions(agents=agents, doctor=False, outbox=False))
    service = HandoffService()  # gives and takes agents; `nxs node run` adds one itself
    n.parts.append(service)
    return n, service


async def main(data: str) -> None:
    vps, _ = node("example-vps", data, AGENT)
    home, at_home = node("example-home", data)

    @at_home.load
    async def load(ctx: HandoffContext) -> str:  # returns once the context is loaded
        state = ctx.json()
        return f"Continuing from {state['last']!r}."

    async with vps, home, Mesh(MeshConfig(servers=(URL,), instance_id="laptop")) as mesh:
        outcome = await mesh.handoff(AGENT, to="example-home", context={"last": "summarise the top three"})
        print(outcome.ready)  # I'm ready. Continuing from 'summarise the top three'.
        print(f"epoch {outcome.epoch}, steps {sorted(outcome.steps)}")
        rec = await mesh.agents.get(AGENT)
        print(f"{AGENT} now lives on {rec.owner if rec else '?'} ({rec.state if rec else '?'})")


with tempfile.TemporaryDirectory() as tmp:
    asyncio.run(main(tmp))
