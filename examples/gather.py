# examples/gather.py: run it with `python examples/gather.py` while a worker runs `nxs node run -C sleep`
import asyncio
import os

from nxs_mesh import Mesh, MeshConfig, NoCapacity

URL = os.environ.get("NXS_URL", "nats://127.0.0.1:4222")  # what `make run` serves by default


async def main():
    async with Mesh(MeshConfig(servers=(URL,), instance_id="gatherer")) as mesh:
        try:
            # One `sleep` subtask per payload (seconds), on whichever live nodes can sleep.
            results = await mesh.gather("sleep", [0.1, 0.2, 0.3, 60], quorum=0.75, deadline=30)
        except NoCapacity as exc:
            raise SystemExit(f"start a worker first: {exc}") from None
        for sub in results:                     # input order
            print(sub.index, sub.state, sub.node)   # 0..2 completed; 3 cancelled once the quorum was met
        print("quorum met:", results.quorum_met)
        print((await mesh.task_status(results[3].task_id))["state"])   # cancelled


asyncio.run(main())
