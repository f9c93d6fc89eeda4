"""nxs_mesh: an agent mesh on NATS JetStream.

    import asyncio
    from nxs_mesh import Mesh, MeshConfig

    async def main():
        async with Mesh(MeshConfig(instance_id="nxs-node-001")) as mesh:
            ack = await mesh.publish("CHAT", "hello", to="nxs-node-002")
            print(ack.seq)

    asyncio.run(main())

This package never imports typer or rich: agents that embed it stay light.
"""

from nxs_mesh.client.consumer import Abandon, Consumer, Delivery, Reject, Retry
from nxs_mesh.client.files import FileInfo
from nxs_mesh.client.mesh import Mesh, MeshState, PublishResult
from nxs_mesh.config import MeshConfig, load_config
from nxs_mesh.node.doctor import Doctor
from nxs_mesh.node.handlers import Registry
from nxs_mesh.node.node import Node, NodeOptions, NodeState
from nxs_mesh.transport.reader import Record
from nxs_mesh.version import VERSION
from nxs_mesh.wire.envelope import (
    MESSAGE_TYPES,
    Envelope,
    Payload,
    Source,
    Target,
    decode,
    encode,
    new_envelope,
)
from nxs_mesh.wire.errors import (
    AgentError,
    AgentNotFound,
    AgentOrphaned,
    AgentOwned,
    BrokenError,
    CallEnded,
    ClosedError,
    ConfigError,
    ConnectError,
    EnvelopeError,
    FileCorrupt,
    FileError,
    FileNotFound,
    HandoffError,
    HandoffRefused,
    HandoffTimeout,
    JetStreamUnavailable,
    MeshError,
    MeshTimeout,
    NoCapacity,
    NoResponders,
    NotAuthorized,
    NotConnectedError,
    OutboxFull,
    PermissionDenied,
    PortInUse,
    PublishError,
    RemoteError,
    SealError,
    SecurityError,
    ServerError,
    StreamConflict,
    StreamError,
    TaskStateError,
    UnknownMessageType,
    VerificationError,
)

__version__ = VERSION

__all__ = [
    "MESSAGE_TYPES",
    "Abandon",
    "AgentError",
    "AgentNotFound",
    "AgentOrphaned",
    "AgentOwned",
    "Doctor",
    "Node",
    "NodeOptions",
    "NodeState",
    "BrokenError",
    "CallEnded",
    "ClosedError",
    "ConfigError",
    "ConnectError",
    "Consumer",
    "Delivery",
    "Envelope",
    "EnvelopeError",
    "FileCorrupt",
    "FileError",
    "FileInfo",
    "FileNotFound",
    "HandoffError",
    "HandoffRefused",
    "HandoffTimeout",
    "JetStreamUnavailable",
    "Mesh",
    "MeshConfig",
    "MeshError",
    "MeshState",
    "MeshTimeout",
    "NoCapacity",
    "PermissionDenied",
    "NoResponders",
    "NotAuthorized",
    "NotConnectedError",
    "OutboxFull",
    "Payload",
    "PortInUse",
    "PublishError",
    "PublishResult",
    "Record",
    "Registry",
    "Reject",
    "RemoteError",
    "Retry",
    "SealError",
    "SecurityError",
    "ServerError",
    "Source",
    "StreamConflict",
    "StreamError",
    "TaskStateError",
    "Target",
    "UnknownMessageType",
    "VerificationError",
    "__version__",
    "decode",
    "encode",
    "load_config",
    "new_envelope",
]
