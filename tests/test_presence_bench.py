"""`nxs bench scale` at a tiny size: it runs, prints its rows, and its workers stop cleanly (no timings)."""

from __future__ import annotations

import json

import pytest
from nxs_cli.app import app
from nxs_cli.bench import DEFAULT_SCENARIOS, SCENARIOS
from typer.testing import CliRunner


@pytest.mark.timeout(120)
def test_bench_scale_runs_prints_its_rows_and_its_workers_exit_cleanly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", "scale", "--nodes", "10", "--idle-window", "1", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["scenario"]: r for r in json.loads(result.stdout)["rows"]}
    assert set(rows) == {f"scale 10: {what}" for what in (
        "server", "per-node received", "CPU workers", "kill -9 -> last alert", "kill -9 of a doctor -> last alert",
        "false alerts", "max heartbeat gap")}
    assert not any(r["skipped"] for r in rows.values())
    assert rows["scale 10: server"]["mesh"] > 0 and rows["scale 10: per-node received"]["mesh"] >= 0
    for kill in ("kill -9 -> last alert", "kill -9 of a doctor -> last alert"):
        assert rows[f"scale 10: {kill}"]["mesh"] is not None  # every killed node was alerted
    assert rows["scale 10: false alerts"]["mesh"] == 0
    assert "2 of 2 workers exited 0 on SIGTERM" in rows["scale 10: max heartbeat gap"]["note"]


def test_scale_is_run_by_name_only_and_bad_sizes_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "scale" in SCENARIOS and "scale" not in DEFAULT_SCENARIOS
    bad = CliRunner().invoke(app, ["bench", "scale", "--nodes", "10,x"])
    assert bad.exit_code == 1 and "--nodes: expected positive integers" in bad.output
    assert "Traceback" not in bad.output
