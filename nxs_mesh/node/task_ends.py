"""A node part (``node.parts``) for calls that always end: the Doctor's death hook that ends ``orphaned``
the tasks a dead node held on their last delivery.

When the Doctor declares a node dead it naks the node's claimed deliveries (``presence_alerts``), so
JetStream hands each to a live worker; a delivery that was the last one ``max_deliver`` allows is not
handed to anyone, and without this hook its caller would wait for ever. The hook reads the dead
node's claims from its last stored heartbeat and ends each such task ``orphaned`` by a CAS on its
record (from the dead incarnation's claim only: a claim taken over meanwhile is left alone), which
publishes its one RESULT; the ids go into the death alert as ``orphaned_tasks``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nxs_mesh.client.task_states import orphan_claims
from nxs_mesh.node.parts import NodeHost
from nxs_mesh.node.presence import beat_of, claims_of
from nxs_mesh.wire import subjects

__all__ = ["TaskEnds"]

log = logging.getLogger("nxs_mesh.node.task_ends")


class TaskEnds:
    """Adds the orphaned-task death hook to its node (parts start before the Doctor takes the hooks)."""

    name = "task-ends"

    def __init__(self) -> None:
        self._node: NodeHost | None = None

    def __repr__(self) -> str:
        return f"<TaskEnds {self._node.node_id if self._node is not None else 'unstarted'}>"

    async def start(self, node: NodeHost) -> None:
        self._node = node
        node.death_hooks.append(self.orphans)

    async def stop(self, grace: float) -> None:
        return None

    async def orphans(self, dead: str) -> Mapping[str, Any]:
        """The death hook: end the dead node's last-delivery tasks ``orphaned``; their ids for the alert."""
        mesh = self._node.mesh if self._node is not None else None
        if mesh is None:
            return {}
        rec = await mesh.last("heartbeat", subjects.heartbeat(dead))
        beat = beat_of(rec.envelope) if rec is not None else None
        if beat is None or not claims_of(beat[2]):
            return {}
        ended = await orphan_claims(mesh, await mesh.task_store(), dead, beat[0], sorted(claims_of(beat[2])))
        if ended:
            log.warning("ended %d task(s) of dead node %s orphaned (no delivery left): %s", len(ended), dead, ended)
        return {"orphaned_tasks": ended} if ended else {}
