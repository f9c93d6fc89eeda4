"""`nxs nodes / status / cmd / ping / task submit / doctor / alerts / top` as subprocesses against live workers."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from node_support import Worker, run_cli, wait_state

from nxs_mesh import Mesh
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer


@pytest.mark.timeout(90)
async def test_cli_against_live_workers(mesh: Mesh, nats_server: NatsServer, tmp_path: Path):
    url = nats_server.url
    a, b = unique_id("cli-a"), unique_id("cli-b")
    workers = [Worker(url, a, tmp_path, "-C", "sleep").start(), Worker(url, b, tmp_path).start()]
    try:
        await wait_state(mesh, a, "running")
        await wait_state(mesh, b, "running")

        code, out, err = await run_cli(url, "nodes", "--json")
        assert code == 0, err
        listed = {n["node"]: n for n in json.loads(out)}
        assert listed[a]["state"] == listed[b]["state"] == "running"
        assert listed[a]["location"] == "test" and listed[a]["version"] and listed[a]["server"] == url

        code, out, err = await run_cli(url, "nodes")
        assert code == 0 and a in out and "running" in out, err

        code, out, err = await run_cli(url, "cmd", a, "echo", '{"x": 1}', "--json")
        assert code == 0, err
        assert json.loads(out) == {"node": a, "result": {"x": 1}}

        code, out, err = await run_cli(url, "cmd", a, "no-such-command")
        assert code != 0 and "unknown command" in err

        code, out, err = await run_cli(url, "cmd", b, "sleep", "5", "--timeout", "0.5")
        assert code != 0 and "no reply" in err  # timeout -> non-zero exit

        code, out, err = await run_cli(url, "ping", a, "-n", "2")
        assert code == 0 and out.count(f"pong from {a}") == 2, err

        code, out, err = await run_cli(url, "status", a, "--json")
        assert code == 0 and json.loads(out)["capabilities"] == ["sleep"], err

        code, out, err = await run_cli(url, "task", "submit", "sleep", "0.1", "--wait", "--json")
        assert code == 0, err
        assert json.loads(out)["node"] == a

        code, out, err = await run_cli(url, "doctor", "--json")
        report = json.loads(out)
        assert code == 0 and report["health"] == "healthy", out  # the dead letter above is a warning only
        assert {c["name"] for c in report["checks"]} >= {"server", "jetstream", "streams", "consumer lag",
                                                        "dead letters", "nodes"}

        code, out, err = await run_cli(url, "top", "--iterations", "1", "--interval", "0.1")
        assert code == 0 and a in out and "NXS_COMMAND" in out, err

        workers[1].signal(signal.SIGKILL)

        async def degraded() -> dict | None:
            code, out, _ = await run_cli(url, "doctor", "--json")
            return json.loads(out) if code == 1 else None

        report = await eventually(degraded, timeout=20, interval=0.2, what="doctor reports the dead node")
        assert {n["node"]: n["state"] for n in report["nodes"]}[b] == "dead"

        async def alerted() -> list | None:
            code, out, _ = await run_cli(url, "alerts", "--json", "--no-follow")
            items = [json.loads(line) for line in out.splitlines() if line.strip()]
            return items if any(i["event"] == "dead" and i["node"] == b for i in items) else None

        items = await eventually(alerted, timeout=20, interval=0.2, what="death alert listed")
        assert [i["node"] for i in items if i["event"] == "dead"] == [b]
    finally:
        for w in workers:
            w.kill()


async def test_cli_doctor_exits_2_when_no_server_answers(tmp_path: Path):
    from nxs_mesh.transport.server import free_port

    code, out, err = await run_cli(f"nats://127.0.0.1:{free_port()}", "doctor", "--json")
    assert code == 2 and json.loads(out)["health"] == "down"


async def test_cmd_and_ping_to_a_node_not_in_nxs_nodes_fail_at_once(mesh: Mesh, nats_server: NatsServer):
    """Nothing would answer: say so and name the node instead of waiting out --timeout (here 120 s, far
    longer than run_cli's own 20 s deadline, so waiting it out fails the test)."""
    url = nats_server.url
    ghost = unique_id("ghost")
    for args in (("cmd", ghost, "ping"), ("ping", ghost), ("cmd", "*", "ping")):
        code, out, err = await run_cli(url, *args, "--timeout", "120", timeout=20)
        assert code == 1 and out == "", (args, out, err)
        assert len(err.strip().splitlines()) == 1 and "nxs nodes" in err, (args, err)
        assert (ghost if args[1] == ghost else "no node") in err, (args, err)
