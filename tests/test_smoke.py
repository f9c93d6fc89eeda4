
from nxs_mesh import Mesh
from nxs_mesh.testing import eventually


async def test_publish_consume_tail_request(mesh: Mesh, mesh_factory):
    other = await mesh_factory(instance_id="nxs-node-002")
    ack = await mesh.publish("CHAT", "hello", to="nxs-node-002")
    assert ack.seq == 1 and not ack.duplicate
    got = []

    async def handler(env):
        got.append(env)

    await other.consume("chat", handler)
    await eventually(lambda: got)
    assert got[0].content == "hello"
    recs = [r async for r in mesh.tail("chat", last=5)]
    assert [r.envelope.content for r in recs] == ["hello"]

    async def on_cmd(env):
        await other.reply(env, {"pong": env.content["args"]})

    await other.consume("command", on_cmd)
    res = await mesh.request("nxs-node-002", "ping", [1], timeout=5)
    assert res.content == {"pong": [1]}
