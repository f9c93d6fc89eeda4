"""An A2A AgentCard for a mesh agent: its skills are its owner node's commands and task capabilities.

    card = await agent_card(mesh, "agent:research", "http://gw:8080")   # a2a.types.AgentCard

The card names one interface, JSON-RPC at ``<base>/a2a/<agent>`` (``A2A_PATH``), and is what
``GET <base>/a2a/<agent>/.well-known/agent-card.json`` serves. Skill ids say what a message runs:
``command:<name>`` a COMMAND to the agent's owner, ``task:<capability>`` a TASK on the shared work
queue (see ``gateway.a2a_executor``); the default skill is ``command:prompt``.
"""

from __future__ import annotations

from typing import Any

from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentProvider, AgentSkill
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT

from nxs_mesh.client.agents import AgentRecord
from nxs_mesh.client.mesh import Mesh
from nxs_mesh.wire import subjects

__all__ = ["A2A_PATH", "COMMAND_SKILL", "DEFAULT_SKILL", "TASK_SKILL", "agent_card", "agent_url"]

#: Where the gateway serves A2A: ``/a2a/<agent>`` (JSON-RPC) and ``/a2a/<agent>/.well-known/agent-card.json``.
A2A_PATH = "/a2a"
COMMAND_SKILL = "command:"
TASK_SKILL = "task:"
#: What a message without ``metadata.skill`` runs: the ``prompt`` command (the Synadia front door's too).
DEFAULT_SKILL = COMMAND_SKILL + "prompt"
_MODES = ["text/plain", "application/json"]


def agent_url(base_url: str, agent: str) -> str:
    return f"{base_url.rstrip('/')}{A2A_PATH}/{agent}"


async def node_status(mesh: Mesh, node: str) -> dict[str, Any]:
    """The node's last STATUS content ({} when it never published one)."""
    stored = await mesh.last("status", subjects.status(node))
    content = stored.envelope.content if stored is not None and stored.envelope is not None else None
    return content if isinstance(content, dict) else {}


def _skills(commands: list[str], capabilities: list[str]) -> list[AgentSkill]:
    skills = [AgentSkill(id=COMMAND_SKILL + name, name=name, tags=["command"], input_modes=_MODES,
                         output_modes=_MODES,
                         description=f"the {name!r} COMMAND to the agent's node (a text message is "
                                     f"args.prompt, a data part is the args)")
              for name in commands]
    skills += [AgentSkill(id=TASK_SKILL + cap, name=cap, tags=["task"], input_modes=_MODES, output_modes=_MODES,
                          description=f"a {cap!r} TASK on the mesh's shared work queue (any capable node)")
               for cap in capabilities]
    return skills


async def agent_card(mesh: Mesh, record: AgentRecord, base_url: str) -> AgentCard:
    """The card of ``record``'s agent, with the commands and capabilities its owner published."""
    status = await node_status(mesh, record.owner)
    commands = sorted(str(c) for c in status.get("commands") or ())
    capabilities = sorted({*record.capabilities, *(str(c) for c in status.get("capabilities") or ())})
    return AgentCard(
        name=record.agent,
        description=f"nxs-mesh agent {record.agent} (on node {record.owner}, {record.state}); "
                    f"a message runs metadata.skill, by default {DEFAULT_SKILL}",
        supported_interfaces=[AgentInterface(url=agent_url(base_url, record.agent), protocol_binding="JSONRPC",
                                             protocol_version=PROTOCOL_VERSION_CURRENT)],
        provider=AgentProvider(organization="nxs-mesh", url=base_url),
        version=str(record.epoch),
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=_MODES,
        default_output_modes=_MODES,
        skills=_skills(commands, capabilities),
    )
