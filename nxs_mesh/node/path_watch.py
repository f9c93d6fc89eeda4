"""A node part (``node.parts``) that republishes the node's STATUS when its server path changes.

The status says which path the node uses (``local``, ``peer``, ``relay``: ``nxs nodes`` shows it) and
is otherwise republished every ``status_every`` (30 s) or on a state change; a node that moved to the
relay hub, or back, would show its old path for up to 30 s. The watch looks at the path (local state,
no traffic) once per heartbeat interval and asks for a status at once when it changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.node.parts import NodeHost
from nxs_mesh.wire.errors import MeshError

__all__ = ["PathWatch"]

log = logging.getLogger("nxs_mesh.node.path_watch")


class PathWatch:
    """Calls ``changed()`` (the node's "publish status now") when ``node.mesh.server_path`` changes."""

    name = "path-watch"

    def __init__(self, changed: Callable[[], None]) -> None:
        self._changed = changed
        self._sup: Supervisor | None = None
        self.path = "disconnected"

    def __repr__(self) -> str:
        return f"<PathWatch {self.path}>"

    async def start(self, node: NodeHost) -> None:
        mesh = node.mesh
        assert mesh is not None  # parts start after the node connected
        self.path = mesh.server_path
        every = node.options.heartbeat_interval

        async def watch() -> None:
            while True:
                await asyncio.sleep(every)  # sleep-ok: a look per heartbeat interval, local state only
                try:
                    now = mesh.server_path
                except MeshError:  # closing or reopening under us: looked at again next round
                    continue
                if now != self.path:
                    log.info("node %s: server path %s -> %s", node.node_id, self.path, now)
                    self.path = now
                    self._changed()

        self._sup = Supervisor(f"path watch {node.node_id}")
        self._sup.keep("path watch", watch)

    async def stop(self, grace: float) -> None:
        sup, self._sup = self._sup, None
        if sup is not None:
            await sup.stop(timeout=grace)
