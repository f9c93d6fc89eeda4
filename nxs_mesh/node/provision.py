"""What the admin identity sets up so that least-privileged nodes can run (``nxs init`` in secure mode).

A secure node may not create streams, buckets or its own command consumer (a consumer's filters are
what keep a node from reading another node's commands, and the server cannot check filters a node
chooses), so admin creates them: the streams, the task, exactly-once, doctor-lease and agent buckets,
the files bucket, per trusted node its command and handoff (SYNC) consumers, and per agent (those named
and those already in the registry) the CHAT consumer its owner binds to, each with exactly the filters
the node binds to.

    results = await provision(mesh, ["n1", "n2", "n3"], agents=["agent:research"])
"""

from __future__ import annotations

from collections.abc import Iterable

from nxs_mesh.client.consumer import durable_name
from nxs_mesh.client.exactly_once import open_guard
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.client.window import DEFAULT_WINDOW
from nxs_mesh.node.handoff import provisioned_consumers
from nxs_mesh.node.lease import BUCKET as DOCTORS
from nxs_mesh.node.lease import open_doctors_bucket
from nxs_mesh.node.tasks import TaskStore
from nxs_mesh.transport.streams import EnsureResult
from nxs_mesh.wire import subjects

__all__ = ["provision"]


async def provision(mesh: Mesh, nodes: Iterable[str], *, agents: Iterable[str] = (),
                    replicas: int | None = None) -> list[EnsureResult]:
    """Streams, buckets and the nodes' and agents' consumers; idempotent (run it again after adding
    nodes or agents)."""
    results = list(await mesh.ensure_streams(replicas))
    had_tasks = await mesh.admin.stream("KV_NXS_TASKS") is not None
    await TaskStore.open(mesh)
    results.append(EnsureResult("KV NXS_TASKS", "unchanged" if had_tasks else "created", "task claims"))
    had_once = await mesh.admin.stream("KV_NXS_ONCE") is not None
    await open_guard(mesh.admin, "provision")
    results.append(EnsureResult("KV NXS_ONCE", "unchanged" if had_once else "created", "exactly-once records"))
    had_doctors = await mesh.admin.stream(f"KV_{DOCTORS}") is not None
    await open_doctors_bucket(mesh)
    results.append(EnsureResult(f"KV {DOCTORS}", "unchanged" if had_doctors else "created", "doctor leases"))
    had_agents = await mesh.admin.stream("KV_NXS_AGENTS") is not None
    await mesh.agents.bucket()
    results.append(EnsureResult("KV NXS_AGENTS", "unchanged" if had_agents else "created", "agent registry"))
    files = await mesh.files.ensure()
    results.append(EnsureResult("OBJ NXS_FILES", "created" if files == "created" else "unchanged", "files"))
    nodes = sorted(set(nodes))
    wanted = [("NXS_COMMAND", durable_name("command", n), tuple(subjects.filters_for("command", n)), f"commands of {n}")
              for n in nodes]
    registered = [rec.agent for rec in await mesh.agents.list()]
    wanted += [(stream, durable, filters, f"handoff: {stream} {' '.join(filters)}")
               for stream, durable, filters in provisioned_consumers(nodes, [*agents, *registered])]
    for stream, durable, filters, detail in wanted:
        existed = await mesh.admin.consumer(stream, durable) is not None
        await mesh.admin.provision_consumer(stream, durable, filters, batch=DEFAULT_WINDOW)
        results.append(EnsureResult(f"consumer {durable}", "unchanged" if existed else "created", detail))
    return results
