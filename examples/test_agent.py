# examples/test_agent.py: `pytest examples/test_agent.py` (the fixtures come with nxs-mesh)
async def test_my_agent(mesh):
    ack = await mesh.publish("CHAT", "hi", to="other-node")
    assert ack.seq == 1
