"""How a node behaves (``NodeOptions``) and where it is in its life (``NodeState``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nxs_mesh.wire.errors import ConfigError

__all__ = ["NodeOptions", "NodeState"]


class NodeState(enum.StrEnum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"  # running, but a consumer or loop died and is being restarted
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class NodeOptions:
    """How the worker behaves (the connection and identity are in ``MeshConfig``)."""

    heartbeat_interval: float = 1.0
    dead_after: float = 5.0  # the Doctor's timeout (the seed's 5 s)
    grace: float = 10.0  # how long in-flight work may take to finish on stop
    capabilities: tuple[str, ...] = ()
    doctor: bool = True
    doctor_slots: int = 2  # how many doctors the mesh elects (lease slots); the other nodes' doctors stand by
    task_ack_wait: float = 30.0
    task_concurrency: int = 1
    # Commands handled at once; 1 runs them one at a time (a `sleep` delays a `ping` to the same node).
    command_concurrency: int = 1
    fetch_timeout: float = 5.0  # long-poll of idle consumers (an idle fetch is cancelled on stop)
    start_timeout: float = 60.0  # keep retrying startup through leader elections / a server not up yet
    status_every: float = 30.0  # status is republished this often (uptime, load), and on every state change
    agents: tuple[str, ...] = ()
    # Publishes that find no JetStream quorum wait in <data_dir>/outbox-<id>.sqlite (shared with the CLI).
    outbox: bool = True

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0 or self.dead_after <= self.heartbeat_interval:
            raise ConfigError("dead_after", "must be longer than the heartbeat interval (both positive)")
        if self.doctor_slots < 1:
            raise ConfigError("doctor_slots", "must be at least 1 (how many doctors the mesh elects)")
