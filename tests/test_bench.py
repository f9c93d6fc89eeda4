"""`nxs bench` runs every scenario once at tiny size: output shape and positive figures, no timings."""

from __future__ import annotations

import json
import math

from nxs_cli.app import app
from nxs_cli.bench import DEFAULT_SCENARIOS, BenchOptions, run_bench
from nxs_cli.bench.stats import percentile
from typer.testing import CliRunner

from nxs_mesh import Mesh
from nxs_mesh.wire.envelope import new_envelope

TINY = ["-n", "50", "--rounds", "1", "--idle-window", "0.5", "--trials", "1"]


def _check_rows(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        assert {"scenario", "metric", "mesh", "raw", "ratio", "target", "met", "skipped"} <= row.keys()
        if row["skipped"]:
            assert row["mesh"] is None and row["note"]
            continue
        assert isinstance(row["mesh"], float) and math.isfinite(row["mesh"]) and row["mesh"] > 0
        if row["raw"] is not None:
            assert row["raw"] > 0 and row["ratio"] > 0


def test_cli_runs_every_scenario_as_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", *TINY, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # progress goes to stderr: stdout is one JSON document
    assert report["messages"] == 50 and report["machine"]["cores"] >= 1
    _check_rows(report["rows"])
    scenarios = {r["scenario"] for r in report["rows"]}
    assert {"publish sync", "publish pipelined", "consume", "consume exactly-once", "publish -> handler",
            "request/reply", "envelope encode+decode", "idle worker RSS", "embedded extra Node", "kill -9 -> alert",
            "sign+verify", "seal+open", "publish signed", "consume verified"} <= scenarios
    _check_anchors(report["rows"])


def _row(rows: list[dict], scenario: str, metric: str) -> dict:
    return next(r for r in rows if r["scenario"] == scenario and r["metric"] == metric)


def _check_anchors(rows: list[dict]) -> None:
    """The strong anchors are measured in the same run, and the targets read them."""
    for scenario in ("publish sync", "publish pipelined"):
        row = _row(rows, scenario, "msg/s")
        assert row["lean"] > 0 and row["versus"] == ["lean"] and row["target"] == ">= 0.9x lean"
        assert set(row["ratios"]) == {"raw", "lean"}
        cpu = _row(rows, f"{scenario} CPU", "us/msg")
        assert cpu["mesh"] > 0 and cpu["lean"] > 0 and cpu["raw"] > 0
    consume = _row(rows, "consume", "msg/s")
    assert consume["lean"] > 0 and consume["push"] > 0 and consume["versus"] == ["lean", "push"]
    assert consume["met"] == (consume["ratios"]["lean"] >= 0.9 and consume["ratios"]["push"] >= 1.0)
    latency = _row(rows, "publish -> handler", "p50 us")
    assert latency["push"] > 0 and latency["target"] == "<= 1.2x push"
    request = _row(rows, "request/reply", "p50 us")
    assert request["raw"] > 0 and request["lean"] > 0 and request["target"] == "<= 1x sdk"
    if request["sdk"] is None:  # the SDK could not run here: the row says why, and nothing is claimed
        assert request["met"] is None and "Synadia SDK" in request["note"]
    else:
        assert request["met"] == (request["mesh"] <= request["sdk"]) and "synadia-ai-agents" in request["note"]


def test_cli_table_and_unknown_scenario(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "codec", *TINY])
    assert result.exit_code == 0, result.output
    assert "envelope encode+decode" in result.stdout and "ratio" in result.stdout
    bad = runner.invoke(app, ["bench", "nope"])
    assert bad.exit_code != 0 and "unknown nope" in bad.output


async def test_library_runs_selected_scenarios():
    report = await run_bench(["publish", "codec"], BenchOptions(messages=50, rounds=1))
    rows = [r.as_dict() for r in report.rows]
    _check_rows(rows)
    assert [r["scenario"] for r in rows] == ["publish sync", "publish sync CPU", "publish pipelined",
                                             "publish pipelined CPU", "envelope encode+decode"]
    assert set(DEFAULT_SCENARIOS) >= {"publish", "consume", "once", "latency", "request", "codec", "footprint", "failure"}


def test_percentile_nearest_rank():
    data = [float(x) for x in range(1, 101)]
    assert percentile(data, 50) == 50 and percentile(data, 99) == 99 and percentile(data, 100) == 100
    assert percentile([3.0], 90) == 3.0


async def test_publish_many_stores_in_order_and_dedups(mesh: Mesh):
    envs = [new_envelope("CHAT", i, source=mesh.source, to="bench-peer") for i in range(300)]
    results = await mesh.publish_many(envs)
    assert [r.message_id for r in results] == [e.id for e in envs]
    assert [r.seq for r in results] == list(range(1, 301))
    assert not any(r.duplicate for r in results)
    again = await mesh.publish_many(envs[:5])  # same message ids: harmless re-send
    assert all(r.duplicate for r in again)
    info = await mesh.admin.stream("NXS_CHAT")
    assert info.messages == 300
    recs = [r async for r in mesh.tail("chat", instance="bench-peer", last=3)]
    assert [r.envelope.content for r in recs] == [297, 298, 299]


async def test_publish_many_empty(mesh: Mesh):
    assert await mesh.publish_many([]) == []


async def test_exactly_once_cost_is_a_ratio_in_the_same_run():
    report = await run_bench(["once"], BenchOptions(messages=80, rounds=1))
    rows = [r.as_dict() for r in report.rows]
    _check_rows(rows)
    assert [(r["scenario"], r["note"].split(",")[0]) for r in rows] == [
        ("consume exactly-once", "concurrency 1"), ("consume exactly-once", "concurrency 32")]
    assert all(r["raw"] is not None for r in rows)  # the baseline: the same consume without it


def test_cli_profiles_the_mesh_side(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--profile", "consume", "-n", "200"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("consume: 200 messages of 256 B") and "us CPU per message" in first
    assert "Ordered by: internal time" in result.stdout
    assert "nxs_mesh/client/delivery.py" in result.stdout  # the consume path itself was profiled
    bad = runner.invoke(app, ["bench", "--profile", "nope"])
    assert bad.exit_code != 0 and "--profile: expected one of publish, consume" in bad.output
    assert "Traceback" not in bad.output
