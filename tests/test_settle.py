"""A handler must not run again because of a failure after it succeeded (issue 10, item 2)."""

from __future__ import annotations

import pytest

from nxs_mesh import Mesh, MeshConfig, Node, NodeOptions, RemoteError
from nxs_mesh.testing import eventually, unique_id

FAST = NodeOptions(heartbeat_interval=0.2, dead_after=1.0, fetch_timeout=1.0, doctor=False)


class Opaque:
    """Not JSON: a RESULT carrying it cannot be encoded."""


async def test_a_result_that_cannot_be_sent_settles_the_command_and_tells_the_caller(mesh: Mesh,
                                                                                     mesh_config: MeshConfig):
    node = Node(mesh_config.replace(instance_id=unique_id("settle")), FAST)
    calls = []

    @node.command("side-effect")
    async def side_effect(args):
        calls.append(args)
        return Opaque()

    async with node:
        with pytest.raises(RemoteError, match="cannot be sent"):
            await mesh.request(node.node_id, "side-effect", 1, timeout=10)
        [consumer] = node.consumers
        await eventually(lambda: consumer.stats.acked == 1, timeout=10, what="the command acked")
        assert calls == [1] and consumer.stats.retried == 0 and consumer.stats.dead_lettered == 0


async def test_a_task_result_that_cannot_be_sent_completes_the_task_once_with_an_error(mesh: Mesh,
                                                                                      mesh_config: MeshConfig):
    from nxs_mesh.node.tasks import submit_task

    node = Node(mesh_config.replace(instance_id=unique_id("tset")), FAST)
    calls = []

    @node.task("opaque")
    async def opaque(payload):
        calls.append(payload)
        return Opaque()

    async with node:
        with pytest.raises(RemoteError, match="cannot be sent"):
            await submit_task(mesh, "opaque", 7, wait=True, timeout=10)
        [consumer] = node.tasks.consumers if node.tasks else []
        await eventually(lambda: consumer.stats.acked == 1, timeout=10, what="the task acked")
        assert calls == [7] and consumer.stats.retried == 0
