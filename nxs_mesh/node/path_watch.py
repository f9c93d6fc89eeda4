"""A node part (``node.parts``) that republishes the node's STATUS when its server path changes.

The status says which path the node uses (``local``, ``peer``, ``relay``: ``nxs nodes`` shows it) and
is otherwise republished every ``status_every`` (30 s) or on a state change; a node that moved to the
relay hub, or back, would show its old path for up to 30 s. The watch looks at the path (local state,
no traffic) once per heartbeat interval and asks for a status at once when it changed, and again at
every interval for ``REPEAT_FOR`` seconds: right after a move the status stream may be electing a
leader (the host that went away led it), and a failed status publish is otherwise retried only at the
next round, 30 s on. (A few status messages per move: moves are rare.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nxs_mesh.aio.supervisor import Supervisor
from nxs_mesh.node.parts import NodeHost
from nxs_mesh.wire.errors import MeshError

__all__ = ["REPEAT_FOR", "PathWatch"]

#: Seconds after a path change during which the status is asked for at every interval (an election of
#: the status stream's leader after a host went away takes a few seconds).
REPEAT_FOR = 15.0

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
            until = 0.0
            while True:
                await asyncio.sleep(every)  # sleep-ok: a look per heartbeat interval, local state only
                try:
                    now = mesh.server_path
                except MeshError:  # closing or reopening under us: looked at again next round
                    continue
                if now != self.path:
                    log.info("node %s: server path %s -> %s", node.node_id, self.path, now)
                    self.path, until = now, time.monotonic() + REPEAT_FOR
                if time.monotonic() < until:
                    self._changed()

        self._sup = Supervisor(f"path watch {node.node_id}")
        self._sup.keep("path watch", watch)

    async def stop(self, grace: float) -> None:
        sup, self._sup = self._sup, None
        if sup is not None:
            await sup.stop(timeout=grace)
