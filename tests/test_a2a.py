"""The gateway's A2A binding (issue 15 item 2) with the real `a2a-sdk` client, a real gateway (uvicorn)
and real `nxs node run --agent` workers: card discovery, a message answered in its conversation,
streaming, get/list/cancel/subscribe, a task skill, a remote failure, and an unknown agent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from gateway_support import Gate, assert_json_error, running_gateway
from node_support import Worker, results_for, wait_state

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.gateway import TokenTable
from nxs_mesh.testing import eventually, unique_id

a2a_client = pytest.importorskip("a2a.client", reason="the A2A tests need the `a2a` extra (a2a-sdk)")
from a2a.client import A2AClientError, Client, ClientConfig, create_client  # noqa: E402
from a2a.helpers import get_artifact_text, new_data_part, new_text_message  # noqa: E402
from a2a.types import (  # noqa: E402
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)

pytestmark = pytest.mark.timeout(90)

AGENT = "agent:helper"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "a2a_client.py"


@pytest.fixture
async def node(mesh: Mesh, workers: Callable[..., Worker]) -> str:
    """A worker running AGENT (with tests/a2a_agent.py's ``prompt``) and the ``echo`` task capability."""
    node_id = unique_id("w")
    workers(node_id, "--agent", AGENT, "-C", "echo", "--handlers", "tests.a2a_agent:registry")
    await wait_state(mesh, node_id, "running")
    await eventually(lambda: mesh.agents.get(AGENT), timeout=20, what=f"{AGENT} registered")
    return node_id


@pytest.fixture
async def gate(mesh_config: MeshConfig, node: str) -> AsyncIterator[Gate]:
    """The gateway, started once the agent is registered (every test here needs both)."""
    async with running_gateway(mesh_config.replace(instance_id=f"gw-{node}")) as g:
        yield g


@contextlib.asynccontextmanager
async def a2a(gate: Gate, *, streaming: bool = False) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(f"{gate.server.url}/a2a/{AGENT}",
                                     ClientConfig(streaming=streaming, httpx_client=http))
        try:
            yield client
        finally:
            await client.close()


def ask(text: str, context_id: str | None = None, **metadata: str) -> SendMessageRequest:
    message = new_text_message(text, context_id=context_id, role=Role.ROLE_USER)
    for key, value in metadata.items():
        message.metadata[key] = value
    return SendMessageRequest(message=message)


async def last_task(client: Client, request: SendMessageRequest) -> tuple[Task, list[StreamResponse]]:
    events = [event async for event in client.send_message(request)]
    task = next((e.task for e in reversed(events) if e.HasField("task")), None)
    assert task is not None, events
    return task, events


async def test_the_card_lists_the_agents_commands_and_capabilities(gate: Gate, node: str):
    r = await gate.client.get(f"/a2a/{AGENT}/.well-known/agent-card.json")
    assert r.status_code == 200, r.text
    card = r.json()
    assert card["name"] == AGENT and card["capabilities"]["streaming"] is True
    assert card["supportedInterfaces"][0]["url"] == f"{gate.server.url}/a2a/{AGENT}"
    skills = {s["id"] for s in card["skills"]}
    assert {"command:prompt", "command:ping", "task:echo"} <= skills, skills


async def test_a_message_is_answered_in_its_conversation(gate: Gate, node: str):
    async with a2a(gate) as client:
        task, _ = await last_task(client, ask("hello", context_id="conv-1"))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task.context_id == "conv-1"
        text = get_artifact_text(task.artifacts[0])
        assert text == f"{node} heard 'hello' in conv-1 (args say conv-1)", text
        again = await client.get_task(GetTaskRequest(id=task.id))
        assert again.status.state == TaskState.TASK_STATE_COMPLETED and again.artifacts[0] == task.artifacts[0]
        listed = await client.list_tasks(ListTasksRequest(context_id="conv-1"))
        assert [t.id for t in listed.tasks] == [task.id]


async def test_streaming_shows_working_then_the_artifact_then_completed(gate: Gate, node: str):
    async with a2a(gate, streaming=True) as client:
        events = [e async for e in client.send_message(ask("stream me"))]
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert states[0] == TaskState.TASK_STATE_WORKING and states[-1] == TaskState.TASK_STATE_COMPLETED, events
    artifacts = [e.artifact_update.artifact for e in events if e.HasField("artifact_update")]
    assert "heard 'stream me'" in get_artifact_text(artifacts[0])


async def test_a_running_message_is_cancelled_and_a_subscriber_sees_it(gate: Gate, node: str):
    async with a2a(gate, streaming=True) as client:
        stream = client.send_message(ask("hold"))
        first = await anext(stream)
        task_id = first.task.id if first.HasField("task") else first.status_update.task_id
        await stream.aclose()
        seen: list[StreamResponse] = []

        async def subscribe() -> None:
            async for event in client.subscribe(SubscribeToTaskRequest(id=task_id)):
                seen.append(event)

        watcher = asyncio.create_task(subscribe())
        await eventually(lambda: bool(seen), timeout=10, what="the subscriber's first event")
        cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED, cancelled
        await asyncio.wait_for(watcher, 10)  # the subscription ends with the task
        last = seen[-1]
        assert last.HasField("status_update") and last.status_update.status.state == TaskState.TASK_STATE_CANCELED
        assert (await client.get_task(GetTaskRequest(id=task_id))).status.state == TaskState.TASK_STATE_CANCELED


async def test_a_task_skill_runs_on_the_work_queue_and_a_refusal_fails(gate: Gate, node: str):
    async with a2a(gate) as client:
        message = new_text_message("", role=Role.ROLE_USER)
        message.parts[0].CopyFrom(new_data_part({"n": 7}))
        message.metadata["skill"] = "task:echo"
        task, _ = await last_task(client, SendMessageRequest(message=message))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task.artifacts[0].parts[0].data.struct_value["n"] == 7
        refused, _ = await last_task(client, ask("refuse"))
        assert refused.status.state == TaskState.TASK_STATE_FAILED
        assert f"refused by {node}" in refused.status.message.parts[0].text


async def test_an_unknown_agent_is_a_clear_404(gate: Gate, node: str):
    assert_json_error(await gate.client.get("/a2a/agent:nobody/.well-known/agent-card.json"), 404, "agent")
    assert_json_error(await gate.client.post("/a2a/agent:nobody", json={"jsonrpc": "2.0", "id": 1,
                                                                       "method": "SendMessage"}), 404, "agent")
    assert_json_error(await gate.client.get("/a2a/bad id!/.well-known/agent-card.json"), 400, "agent")
    with pytest.raises(A2AClientError, match="404"):
        async with httpx.AsyncClient(timeout=10) as http:
            await create_client(f"{gate.server.url}/a2a/agent:nobody", ClientConfig(httpx_client=http))


async def test_the_readme_example_runs_as_written(gate: Gate, node: str, tmp_path):
    """examples/a2a_client.py (the README's "Use it from an A2A client") against this gateway and agent."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), AGENT, cwd=tmp_path, env={**os.environ, "NXS_GATEWAY": gate.server.url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert "command:prompt" in lines[0] and "task:echo" in lines[0], lines
    assert f"answer: {node} heard 'hello' in my-conversation (args say my-conversation)" in lines, lines
    assert lines[-1] == "state: TASK_STATE_COMPLETED", lines


async def test_with_tokens_a2a_needs_a_bearer_token_and_acts_as_its_identity(
        mesh: Mesh, mesh_config: MeshConfig, node: str, tmp_path: Path):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\ntoken = "a2a-token-0123456789"\nidentity = "a2a-caller"\n')
    async with running_gateway(mesh_config.replace(instance_id="gw-tokens"),
                               tokens=TokenTable.load(tokens, mesh_config)) as g:
        card_path = f"/a2a/{AGENT}/.well-known/agent-card.json"
        assert_json_error(await g.client.get(card_path), 401, "Authorization")
        assert_json_error(await g.client.post(f"/a2a/{AGENT}", json={}), 401, "Authorization")
        headers = {"Authorization": "Bearer a2a-token-0123456789"}
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            client = await create_client(f"{g.server.url}/a2a/{AGENT}", ClientConfig(streaming=False, httpx_client=http))
            task, _ = await last_task(client, ask("who is it", context_id="conv-t"))
            await client.close()
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
    [result] = await results_for(mesh, task.id)  # the A2A task id is the COMMAND's correlation id
    assert result.target.instance_id == "a2a-caller"  # the RESULT answers the token's identity


def sdk_tasks() -> list[asyncio.Task]:
    """The A2A SDK's asyncio tasks in this loop (its executors and their consumers)."""
    sdk_dir = str(Path(a2a_client.__file__).resolve().parent.parent)
    codes = [(t, getattr(t.get_coro(), "cr_code", None)) for t in asyncio.all_tasks() if not t.done()]
    return [t for t, code in codes if code is not None and code.co_filename.startswith(sdk_dir)]


async def test_a_stopped_gateway_leaves_no_executor_behind(mesh_config: MeshConfig, node: str):
    async with running_gateway(mesh_config.replace(instance_id=f"gw-stop-{node}")) as g, a2a(g, streaming=True) as client:
        stream = client.send_message(ask("hold"))
        first = await anext(stream)
        await stream.aclose()  # the caller went away; the task still waits for its answer
        task_id = first.task.id if first.HasField("task") else first.status_update.task_id
        task = await client.get_task(GetTaskRequest(id=task_id))
        assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING), task
        assert sdk_tasks(), "the executor should be running now"
    assert sdk_tasks() == []
