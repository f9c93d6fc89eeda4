"""Pluggable pieces of a node (handoff service, cancel listener, ...): started with it, drained with it.

    class MyPart:
        name = "my-part"
        async def start(self, node: NodeHost) -> None: ...  # returns when ready
        async def stop(self, grace: float) -> None: ...  # drain within grace, then release

    node.parts.append(MyPart())  # before start()

Parts start after the node's consumers and before its Doctor, in order; they stop alongside the
consumers, within the node's ``grace``. A part that fails to start fails the node's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nxs_mesh.client.mesh import Mesh
    from nxs_mesh.config import MeshConfig
    from nxs_mesh.node.doctor import DeathHook
    from nxs_mesh.node.handlers import Registry
    from nxs_mesh.node.options import NodeOptions
    from nxs_mesh.node.tasks import TaskRunner

__all__ = ["NodeHost", "NodePart"]


class NodeHost(Protocol):
    """What a part may use of the node that runs it (``Node`` is one; parts never import it)."""

    config: MeshConfig
    options: NodeOptions
    registry: Registry
    mesh: Mesh | None
    tasks: TaskRunner | None
    epoch: str
    death_hooks: list[DeathHook]

    @property
    def node_id(self) -> str: ...


class NodePart(Protocol):
    name: str

    async def start(self, node: NodeHost) -> None: ...

    async def stop(self, grace: float) -> None: ...
