# examples/resize.py: task handlers for `nxs node run --handlers examples.resize:registry -C resize`
from nxs_mesh import Registry

registry = Registry()


@registry.task("resize")
async def resize(payload, ctx):
    width = payload.get("w", 256) if isinstance(payload, dict) else 256
    return {"w": width, "h": width, "node": ctx.node_id}   # the RESULT content
