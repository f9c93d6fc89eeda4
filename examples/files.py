# examples/files.py: files in the mesh's Object Store; `python examples/files.py` while `make run` serves
import asyncio
import os
import tempfile
from pathlib import Path

from nxs_mesh import Mesh, MeshConfig

URL = os.environ.get("NXS_URL", "nats://127.0.0.1:4222")  # what `make run` serves by default


async def main(src: Path, copy: Path):
    async with Mesh(MeshConfig(servers=(URL,), instance_id="nxs-node-001")) as mesh:
        info = await mesh.files.put(src, name="contexts/research.bin", to="nxs-node-002",
                                    progress=lambda done, total: print(f"{done} of {total} bytes stored"))
        print(f"{info.name}: {info.size} bytes, {info.chunks} chunks, {info.digest}")
        await mesh.files.get(info.name, copy)  # written beside, renamed into place once SHA-256 matched
        size = 0
        async for chunk in mesh.files.stream(info.name):  # or chunk by chunk, never all in memory
            size += len(chunk)
        print([f.name for f in await mesh.files.list()], size)
        await mesh.files.delete(info.name)


with tempfile.TemporaryDirectory() as tmp:
    src, copy = Path(tmp, "context.bin"), Path(tmp, "copy.bin")
    src.write_bytes(os.urandom(5 * 1024 * 1024))
    asyncio.run(main(src, copy))
    print("same bytes:", copy.read_bytes() == src.read_bytes())
