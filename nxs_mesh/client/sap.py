"""The Synadia Agent Protocol from the mesh's side (``synadia-ai-agents`` and ``-agent-service``).

The back door: a mesh agent discovers and prompts agents that speak the protocol (``mesh.sap``):

    for info in await mesh.sap.list():
        print(info.name, info.description)
    async for text in mesh.sap.prompt("echo", "hello"):   # "echo", "echo.owner" or "echo.owner.session"
        print(text, end="")

The SDKs take a nats-py client. ``mesh.sap`` hands them this Mesh's own connection (the client layer
is where the transport's objects may be seen); the front door (``node.sap``) opens a dedicated one
with ``open_sdk_connection``. The SDKs are imported on first use, so a Mesh that never speaks the
protocol loads neither them nor pydantic; without them installed the first use raises a ConfigError
naming the ``sap`` extra. Their errors are translated here, into the mesh's tree.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from nxs_mesh.transport.connection import connect
from nxs_mesh.wire.errors import (
    BrokenError,
    ConfigError,
    EnvelopeError,
    MeshError,
    MeshTimeout,
    NoResponders,
    RemoteError,
)

if TYPE_CHECKING:
    from nxs_mesh.config import MeshConfig
    from nxs_mesh.transport.link import Link

__all__ = ["SapAccess", "SapAgentInfo", "SapAgents", "open_sdk_connection", "sdk", "translate_sdk_errors"]

_INSTALL = "install the Synadia Agent Protocol SDKs: pip install 'nxs-mesh[sap]'"


def sdk(name: str = "agents") -> ModuleType:
    """``synadia_ai.agents`` (or ``synadia_ai.agent_service``, ``name="agent_service"``), imported now."""
    try:
        return importlib.import_module(f"synadia_ai.{name}")
    except ImportError as exc:
        raise ConfigError("sap", f"{_INSTALL} ({exc})") from None


async def open_sdk_connection(config: MeshConfig, role: str) -> Any:
    """A nats-py client of its own for an SDK (opened by the transport, so reconnects and TLS are the
    mesh's); the caller closes it with ``await nc.close()``."""
    return await connect(config, name=f"nxs-sap-{role}:{config.instance_id}")


@contextlib.contextmanager
def translate_sdk_errors(what: str) -> Iterator[None]:
    """The SDK's exceptions (and nats-py's, which it lets through) as MeshErrors naming ``what``."""
    agents = sdk()
    try:
        yield
    except MeshError:
        raise
    except (agents.StreamStalledError, agents.StreamMaxWaitExceededError) as exc:
        raise MeshTimeout(f"{what}: {exc}") from None
    except TimeoutError:
        raise MeshTimeout(f"{what}: no answer in time") from None
    except agents.ValidationError as exc:  # refused before anything was sent: empty, too big, attachments
        raise EnvelopeError(str(exc), "prompt") from None
    except agents.NatsAgentError as exc:  # the agent's §9 error frames among them
        raise RemoteError(f"{what}: {exc}") from None
    except Exception as exc:
        if not type(exc).__module__.startswith("nats."):
            raise
        if type(exc).__name__ == "NoRespondersError":
            raise NoResponders(f"{what}: nobody serves it") from None
        raise BrokenError(f"{what}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class SapAgentInfo:
    """One discovered instance of a protocol agent (``$SRV.INFO.agents``)."""

    agent: str
    owner: str
    session: str
    instance_id: str
    description: str
    version: str
    subject: str
    metadata: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.agent}.{self.owner}.{self.session}"

    def matches(self, name: str) -> bool:
        """``name`` is ``agent``, ``agent.owner``, ``agent.owner.session`` or the instance id."""
        if name == self.instance_id:
            return True
        want = name.split(".")
        return 1 <= len(want) <= 3 and want == [self.agent, self.owner, self.session][: len(want)]

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "owner": self.owner, "session": self.session, "instance_id": self.instance_id,
                "description": self.description, "version": self.version, "subject": self.subject,
                "metadata": dict(self.metadata)}


def _info_of(agent: Any) -> SapAgentInfo:
    return SapAgentInfo(agent.agent, agent.owner, agent.session_name, agent.instance_id, agent.description,
                        agent.version, agent.prompt_subject, dict(agent.metadata))


class SapAgents:
    """Discover and prompt Synadia-protocol agents over a Mesh's connection (``mesh.sap``)."""

    def __init__(self, link: Link) -> None:
        self._link = link

    def __repr__(self) -> str:
        return f"<SapAgents over {self._link.connected_url or '-'}>"

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        """An SDK ``Agents`` on the Mesh's connection, for one operation (its handles die with it)."""
        agents = sdk().Agents(nc=self._link.nc)
        try:
            yield agents
        finally:
            await agents.close()  # the SDK's own state; the connection stays the Mesh's

    async def list(self, *, timeout: float | None = None) -> list[SapAgentInfo]:
        """Every protocol agent instance that answers discovery, sorted by name (``timeout``: wait exactly
        that long; default: until replies stop)."""
        async with self._client() as agents:
            with translate_sdk_errors("discovering protocol agents"):
                found = await agents.discover(timeout=timeout)
        return sorted((_info_of(a) for a in found), key=lambda i: (i.name, i.instance_id))

    async def prompt(self, name: str, text: str, *, timeout: float = 60.0, discover_timeout: float | None = None,
                     **fields: Any) -> AsyncIterator[str]:
        """Prompt the agent ``name`` (see ``SapAgentInfo.matches``) and yield its reply as it streams.

        ``timeout``: the stream's inactivity limit. ``fields`` go into the envelope as extra fields (an
        nxs front door reads ``message_id``, ``priority`` and ``ttl``). Raises ``NoResponders`` when no
        such agent answers discovery, ``RemoteError`` when it answers with an error, ``MeshTimeout``
        when its stream stalls."""
        sdk_agents = sdk()
        async with self._client() as agents:
            with translate_sdk_errors(f"prompting {name}"):
                found = [a for a in await agents.discover(timeout=discover_timeout) if _info_of(a).matches(name)]
                if not found:
                    raise NoResponders(f"no Synadia-protocol agent {name!r} answers discovery "
                                       "(`nxs agents --sap` lists them)")
                stream = found[0].prompt(sdk_agents.Envelope(prompt=text, **fields), timeout=timeout)
                async with contextlib.aclosing(stream):
                    async for chunk in stream:
                        if isinstance(chunk, sdk_agents.ResponseChunk):
                            yield chunk.text

    async def ask(self, name: str, text: str, **options: Any) -> str:
        """``prompt`` collected into one string."""
        return "".join([part async for part in self.prompt(name, text, **options)])


class SapAccess:
    """Mixed into ``Mesh``: ``mesh.sap``."""

    if TYPE_CHECKING:

        @property
        def link(self) -> Link: ...

    @functools.cached_property
    def sap(self) -> SapAgents:
        """Synadia-protocol agents on this server: ``list()``, ``prompt(name, text)``, ``ask(name, text)``."""
        return SapAgents(self.link)
