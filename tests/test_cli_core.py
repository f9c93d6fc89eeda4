"""The core CLI (up, pub, tail, streams, init, dlq, config) against real nats-server processes.

In-process through Typer's CliRunner for most behaviour, and as real subprocesses (`python -m nxs_cli`)
where signals and the process boundary matter (`nxs up`, `nxs tail --follow`).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import api as jsapi
from nxs_cli.app import app
from typer.testing import CliRunner

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer, free_port, port_is_free
from nxs_mesh.transport.streams import STREAMS


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No NXS_* settings, no nxs.toml and no ~/.config/nxs from the machine running the tests."""
    for key in list(os.environ):
        if key.startswith("NXS_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)


def nxs(url: str | None, *args: str, env: dict[str, str] | None = None) -> Any:
    argv = (["--url", url] if url else []) + list(args)
    result = CliRunner().invoke(app, argv, env=env)
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def arun(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def _js_call(url: str, fn: Any) -> Any:
    nc = await nats.connect(url)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def init_ok(url: str) -> None:
    r = nxs(url, "init")
    assert r.exit_code == 0, r.output


def pub_json(url: str, *args: str, instance: str = "node-a") -> dict[str, Any]:
    r = nxs(url, "--instance-id", instance, "pub", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


class Proc:
    """`python -m nxs_cli ...` with its stdout read line by line on a thread (waits have deadlines)."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "nxs_cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.out: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.out.append(line)
            self._lines.put(line)

    def wait_line(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {needle!r} within {timeout}s: {self.out}; "
                                     f"stderr: {self.stderr()}") from None
            if needle in line:
                return line

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        self.p.send_signal(sig)
        return self.p.wait(timeout)

    def stderr(self) -> str:
        if self.p.poll() is None or self.p.stderr is None:
            return "(still running)"
        return self.p.stderr.read()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


# -- pub / tail -------------------------------------------------------------------------------------------
def test_pub_prints_seq_and_tail_last_shows_it(nats_server: NatsServer) -> None:
    url = nats_server.url
    init_ok(url)
    r = nxs(url, "--instance-id", "node-a", "pub", "chat", "--to", "nxs-node-002", "hello there")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("stored NXS_CHAT seq 1 (message_id ")
    mid = "6f1c7a0e-1111-4222-8333-944455556666"
    assert "seq 2" in nxs(url, "pub", "chat", "--to", "nxs-node-002", "--id", mid, "again").stdout
    dup = nxs(url, "pub", "chat", "--to", "nxs-node-002", "--id", mid, "again")
    assert dup.exit_code == 0 and dup.stdout.startswith("duplicate") and "seq 2" in dup.stdout

    r = nxs(url, "tail", "--last", "5")
    assert r.exit_code == 0, r.output
    assert "hello there" in r.stdout and "node-a/main" in r.stdout and "nxs-node-002/*" in r.stdout
    assert r.stdout.count("again") == 1  # the duplicate was not stored twice

    # stdin content, JSON content, metadata and a task with its capability
    r = CliRunner().invoke(app, ["--url", url, "pub", "chat", "--to", "node-b", "-", "--json"], input="from stdin\n")
    assert r.exit_code == 0, r.output
    task = pub_json(url, "task", '{"n": 1}', "--json-content", "--capability", "gpu", "--meta", "tries=3",
                    "--meta", "who=me", "--priority", "7")
    assert task["stream"] == "NXS_TASK" and task["seq"] == 1 and task["duplicate"] is False
    lines = nxs(url, "tail", "chat", "--last", "1", "--json").stdout.splitlines()
    assert json.loads(lines[0])["payload"]["content"] == "from stdin"
    stored = json.loads(nxs(url, "tail", "task", "--json").stdout)
    assert stored["payload"] == {"content": {"n": 1}, "metadata": {"tries": 3, "who": "me", "capability": "gpu"}}
    assert stored["priority"] == 7


def test_tail_json_is_exactly_the_wire_json(nats_server: NatsServer) -> None:
    url = nats_server.url
    init_ok(url)
    acks = [pub_json(url, "chat", f"m{i} [not markup] ✓", "--to", "node-b", "--meta", f"i={i}") for i in range(3)]
    r = nxs(url, "tail", "--json")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()

    raws = arun(_js_call(url, lambda js: asyncio.gather(*(js.get_msg("NXS_CHAT", a["seq"]) for a in acks))))
    assert [line.encode() for line in lines] == [raw.data for raw in raws]
    assert [json.loads(line)["message_id"] for line in lines] == [a["message_id"] for a in acks]


def test_tail_start_options_and_filters(nats_server: NatsServer) -> None:
    url = nats_server.url
    init_ok(url)
    pub_json(url, "chat", "a-to-b", "--to", "node-b", instance="node-a")      # seq 1
    pub_json(url, "chat", "c-to-d", "--to", "node-d", instance="node-c")      # seq 2
    pub_json(url, "chat", "b-to-a", "--to", "node-a", instance="node-b")      # seq 3
    pub_json(url, "chat", "c-to-b", "--to", "node-b", instance="node-c")      # seq 4
    pub_json(url, "command", '{"command": "ping"}', "--json-content", "--to", "node-a", instance="node-c")

    def contents(*args: str) -> list[Any]:
        r = nxs(url, "tail", *args, "--json")
        assert r.exit_code == 0, r.output
        return [json.loads(line)["payload"]["content"] for line in r.stdout.splitlines()]

    assert contents() == ["a-to-b", "c-to-d", "b-to-a", "c-to-b"]  # default: the last 10
    assert contents("--last", "2") == ["b-to-a", "c-to-b"]
    assert contents("--seq", "3") == ["b-to-a", "c-to-b"]
    assert contents("--since", "10m") == ["a-to-b", "c-to-d", "b-to-a", "c-to-b"]
    assert contents("--since", "2999-01-01T00:00:00Z") == []
    third_time = arun(_js_call(url, lambda js: js.get_msg("NXS_CHAT", 3))).time
    assert contents("--since", third_time.isoformat()) == ["b-to-a", "c-to-b"]
    # --node: from or to that node; --last counts matching messages only
    assert contents("--node", "node-a") == ["a-to-b", "b-to-a"]
    assert contents("--node", "node-a", "--last", "1") == ["b-to-a"]
    assert contents("--node", "node-d") == ["c-to-d"]
    # --type across every stream
    assert contents("all", "--type", "command") == [{"command": "ping"}]
    assert contents("all", "--node", "node-a", "--last", "2") == ["b-to-a", {"command": "ping"}]
    # usage errors: exit 2
    assert nxs(url, "tail", "--last", "1", "--seq", "1").exit_code == 2
    assert nxs(url, "tail", "--since", "yesterday").exit_code == 2
    bad = nxs(url, "tail", "--type", "gossip")
    assert bad.exit_code == 1 and "gossip" in bad.stderr and "CHAT" in bad.stderr


def test_tail_shows_invalid_records_without_crashing(nats_server: NatsServer) -> None:
    url = nats_server.url
    init_ok(url)
    pub_json(url, "chat", "good", "--to", "node-b")
    arun(_js_call(url, lambda js: js.publish("nxs.chat.node-b.main", b"\x00garbage")))
    r = nxs(url, "tail")
    assert r.exit_code == 0, r.output
    assert "good" in r.stdout and "INVALID" in r.stdout and "nxs.chat.node-b.main" in r.stdout
    r = nxs(url, "tail", "--json")
    assert r.exit_code == 0
    assert [json.loads(line)["payload"]["content"] for line in r.stdout.splitlines()] == ["good"]
    assert "skipped invalid record seq 2" in r.stderr


def test_tail_follow_subprocess_prints_new_messages_and_stops_on_ctrl_c(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    init_ok(url)
    pub_json(url, "chat", "first", "--to", "node-b")
    proc = Proc("--url", url, "tail", "chat", "--follow", "--last", "1", "--json", cwd=tmp_path)
    try:
        assert json.loads(proc.wait_line('"first"'))["payload"]["content"] == "first"
        second = pub_json(url, "chat", "second", "--to", "node-b")
        assert json.loads(proc.wait_line('"second"'))["message_id"] == second["message_id"]
        assert proc.stop(signal.SIGINT) == 0
        assert "Traceback" not in proc.stderr()
    finally:
        proc.kill()


# -- streams / init ---------------------------------------------------------------------------------------
def test_streams_lists_missing_then_counts(nats_server: NatsServer) -> None:
    url = nats_server.url
    r = nxs(url, "streams")
    assert r.exit_code == 0 and r.stdout.count("missing") == len(STREAMS) and "nxs init" in r.stderr
    init_ok(url)
    pub_json(url, "chat", "x", "--to", "node-b")
    rows = {row["stream"]: row for row in json.loads(nxs(url, "streams", "--json").stdout)}
    assert set(rows) == {s.name for s in STREAMS} and all(row["exists"] for row in rows.values())
    assert rows["NXS_CHAT"]["messages"] == 1 and rows["NXS_CHAT"]["replicas"] == 1
    assert rows["NXS_TASK"]["retention"] == "workqueue" and rows["NXS_DLQ"]["messages"] == 0
    table = nxs(url, "streams").stdout
    assert "NXS_CHAT" in table and "missing" not in table


def test_init_is_idempotent_updates_old_configs_and_reports_conflicts(nats_server: NatsServer) -> None:
    url = nats_server.url

    async def old_task_stream(js: Any) -> None:
        # A hand-made NXS_TASK with limits retention: the mesh wants a work queue, which cannot be changed.
        await js.add_stream(jsapi.StreamConfig(name="NXS_TASK", subjects=["nxs.task.>"],
                                               retention=jsapi.RetentionPolicy.LIMITS))

    arun(_js_call(url, old_task_stream))
    r = nxs(url, "init", "--json")
    assert r.exit_code == 1
    results = {x["stream"]: x for x in json.loads(r.stdout)}
    assert results["NXS_TASK"]["action"] == "conflict" and "retention" in results["NXS_TASK"]["detail"]
    assert all(x["action"] == "created" for name, x in results.items() if name != "NXS_TASK")
    assert "NXS_TASK" in r.stderr and "nxs init" in r.stderr

    async def fix_task_and_age_chat(js: Any) -> None:
        await js.delete_stream("NXS_TASK")
        info = await js.stream_info("NXS_CHAT")
        info.config.max_age = 3600.0
        await js.update_stream(info.config)

    arun(_js_call(url, fix_task_and_age_chat))
    r = nxs(url, "init")
    assert r.exit_code == 0, r.output
    assert "updated" in r.stdout and "max_age" in r.stdout
    again = json.loads(nxs(url, "init", "--json").stdout)
    assert [x["action"] for x in again] == ["unchanged"] * len(STREAMS)


# -- dlq --------------------------------------------------------------------------------------------------
def test_dlq_list_shows_a_dead_letter_with_its_reason_and_replay_puts_it_back(nats_server: NatsServer) -> None:
    url = nats_server.url
    node = unique_id("node")
    subject = f"nxs.chat.{node}.main"

    async def dead_letter_garbage() -> None:
        async with Mesh(MeshConfig(servers=(url,), instance_id=node)) as mesh:
            await mesh.consume("chat", lambda env: None, agent="main")
            ack = await mesh.link.js.publish(subject, b"{not json")  # a foreign, broken publisher
            assert ack.stream == "NXS_CHAT"

            async def dead() -> bool:
                return (await mesh.admin.stream("NXS_DLQ")).messages == 1

            await eventually(dead, what="the garbage message in NXS_DLQ")

    arun(dead_letter_garbage())
    r = nxs(url, "dlq", "list", "--json")
    assert r.exit_code == 0, r.output
    [dead] = json.loads(r.stdout)
    assert dead["subject"] == subject and dead["stream"] == "NXS_CHAT"
    assert "JSON" in dead["reason"] and dead["preview"] == "{not json"
    table = nxs(url, "dlq", "list").stdout
    assert subject in table and str(dead["id"]) in table

    assert nxs(url, "dlq", "replay").exit_code == 2  # an id or --all is needed
    missing = nxs(url, "dlq", "replay", "999")
    assert missing.exit_code == 1 and "no dead letter with id 999" in missing.stderr
    r = nxs(url, "dlq", "replay", str(dead["id"]))
    assert r.exit_code == 0, r.output
    assert f"replayed dead letter {dead['id']} -> {subject}" in r.stdout and "NXS_CHAT seq 2" in r.stdout

    async def after(js: Any) -> tuple[int, bytes]:
        return (await js.stream_info("NXS_DLQ")).state.messages, (await js.get_msg("NXS_CHAT", 2)).data

    assert arun(_js_call(url, after)) == (0, b"{not json")
    assert json.loads(nxs(url, "dlq", "list", "--json").stdout) == []
    assert json.loads(nxs(url, "dlq", "replay", "--all", "--json").stdout) == []
    assert nxs(url, "dlq", "purge").exit_code == 2  # no prompt without a terminal: --yes is required
    assert json.loads(nxs(url, "dlq", "purge", "--yes", "--json").stdout) == {"purged": 0}


# -- config -----------------------------------------------------------------------------------------------
def test_config_shows_each_source_with_flag_over_env_over_file(tmp_path: Path) -> None:
    toml = tmp_path / "mesh.toml"
    toml.write_text('[mesh]\ninstance_id = "file-node"\nagent_id = "file-agent"\nlocation = "file-loc"\n'
                    'password = "hunter2"\nurl = "nats://user:s3cret@10.0.0.1:4222"\n')
    env = {"NXS_CONFIG": str(toml), "NXS_AGENT_ID": "env-agent", "NXS_LOCATION": "env-loc"}
    r = nxs(None, "--agent-id", "flag-agent", "config", "--json", env=env)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows["agent_id"] == {"value": "flag-agent", "source": "flag"}
    assert rows["location"] == {"value": "env-loc", "source": "env:NXS_LOCATION"}
    assert rows["instance_id"] == {"value": "file-node", "source": f"file:{toml}"}
    assert rows["replicas"] == {"value": None, "source": "default"}
    assert rows["password"]["value"] == "***" and rows["servers"]["value"] == ["nats://user:***@10.0.0.1:4222"]
    assert "hunter2" not in r.stdout and "s3cret" not in r.stdout
    table = nxs(None, "config", env=env).stdout
    assert "env:NXS_AGENT_ID" in table and "env-agent" in table and "hunter2" not in table
    broken = nxs(None, "config", env={"NXS_CONFIG": str(tmp_path / "nope.toml")})
    assert broken.exit_code == 1 and "nope.toml does not exist" in broken.stderr


# -- errors -----------------------------------------------------------------------------------------------
def test_errors_are_one_line_on_stderr_without_traceback(nats_server: NatsServer) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"
    for args in (("tail",), ("streams",), ("pub", "chat", "--to", "node-b", "x", "--no-queue")):
        r = nxs(nowhere, *args)
        assert r.exit_code == 1 and r.stdout == ""
        assert "cannot reach" in r.stderr and "nxs up" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1

    url = nats_server.url
    r = nxs(url, "pub", "chat", "--to", "bad id!", "x")
    assert r.exit_code == 1 and "target.instance_id" in r.stderr and "--to" in r.stderr
    assert "priority" in nxs(url, "pub", "chat", "--priority", "12", "x").stderr
    assert "payload.metadata.capability" in nxs(url, "pub", "task", "x").stderr
    assert nxs(url, "pub", "gossip", "x").exit_code == 1
    assert nxs(url, "pub", "chat", "--meta", "novalue", "x").exit_code == 2
    assert nxs(url, "pub", "chat", "--json-content", "{nope").exit_code == 2
    # no streams yet: the server has no responder for the subject
    r = nxs(url, "pub", "chat", "--to", "node-b", "x")
    assert r.exit_code == 1 and "nxs init" in r.stderr


# -- up ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_subprocess_serves_the_mesh_and_stops_cleanly(tmp_path: Path, sig: int) -> None:
    port = free_port()
    proc = Proc("up", "--port", str(port), "--monitor-port", str(free_port()), cwd=tmp_path)
    try:
        line = proc.wait_line("listening")
        url = f"nats://127.0.0.1:{port}"
        assert url in line
        out = "".join(proc.out)
        assert "NXS_CHAT created" in out and "JetStream store .nxs" in out

        async def names(js: Any) -> set[str]:
            return {(await js.stream_info(s.name)).config.name for s in STREAMS}

        assert arun(_js_call(url, names)) == {s.name for s in STREAMS}
        assert nxs(url, "pub", "chat", "--to", "node-b", "hi").stdout.startswith("stored NXS_CHAT seq 1")
        assert proc.stop(sig) == 0
        assert "stopped" in "".join(proc.out)
        assert port_is_free("127.0.0.1", port)  # the server went down with it
        assert (tmp_path / ".nxs" / "jetstream").is_dir()
    finally:
        proc.kill()


def test_up_on_a_taken_port_says_how_to_choose_another(nats_server: NatsServer, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    r = nxs(None, "up", "--port", str(nats_server.port), "--store", str(tmp_path / "s"))
    assert r.exit_code == 1
    assert f"port {nats_server.port}" in r.stderr and "already in use" in r.stderr and "--port" in r.stderr
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored
    r = nxs(None, "up", "--store", str(tmp_path / "s"), env={"NXS_PORT": str(nats_server.port)})
    assert r.exit_code == 1 and f"port {nats_server.port}" in r.stderr


def test_up_cluster_of_three_with_replicated_streams(tmp_path: Path) -> None:
    while True:  # three consecutive free client ports
        port = free_port()
        if all(port_is_free("127.0.0.1", port + i) for i in (1, 2)):
            break
    proc = Proc("up", "--cluster", "3", "--port", str(port), "--store", str(tmp_path / "c"), cwd=tmp_path)
    try:
        line = proc.wait_line("listening", timeout=30)
        urls = [f"nats://127.0.0.1:{port + i}" for i in range(3)]
        assert line.strip() == f"listening on {','.join(urls)}"
        rows = {r["stream"]: r for r in json.loads(nxs(urls[2], "streams", "--json").stdout)}
        assert all(r["exists"] and r["replicas"] == 3 for r in rows.values())
        assert proc.stop(signal.SIGINT) == 0
        assert all(port_is_free("127.0.0.1", port + i) for i in range(3))
    finally:
        proc.kill()
