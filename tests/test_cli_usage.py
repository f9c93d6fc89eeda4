"""The command line as a new user meets it: --version, help text, one bounded priority option, port
validation at the edge. In-process through Typer's CliRunner; no option here needs a server to be judged.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from nxs_cli.app import app
from typer.testing import CliRunner

from nxs_mesh.transport.server import free_port


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


def nxs(*args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(app, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the app with its argv path (Typer builds click-style commands and groups)."""
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_version_comes_from_the_installed_distribution() -> None:
    r = nxs("--version")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"nxs-mesh {importlib.metadata.version('nxs-mesh')}"


def test_help_shows_every_help_text_as_written() -> None:
    """Bracketed text such as `[node] table` or `[min(3, servers)]` must not be taken for markup."""
    root = typer.main.get_command(app)
    checked = 0
    for path, command in _commands(root):
        texts = [command.help or ""] + [p.help for p in command.params if getattr(p, "help", None)]
        texts = [t.split("\f")[0] for t in texts if "[" in t]
        if not texts:
            continue
        r = nxs(*path, "--help", env={"COLUMNS": "400"})
        assert r.exit_code == 0, r.output
        shown = _flat(r.stdout)
        for text in texts:
            for bracketed in re.findall(r"\[[^\]]*\]", text):
                assert _flat(bracketed) in shown, f"nxs {' '.join(path)} --help lost {bracketed!r}"
                checked += 1
    assert checked >= 8  # [node], [all], [min(3, servers)], [yes], ... (the test must look at something)


def test_one_bounded_priority_option_for_every_command() -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    runs = {
        "pub": nxs("--url", dead, "pub", "chat", "x", "--priority", "99"),
        "task submit": nxs("--url", dead, "task", "submit", "echo", "--priority", "99"),
        "cmd": nxs("--url", dead, "cmd", "n1", "ping", "--priority", "99"),
    }
    errors = set()
    for name, r in runs.items():
        assert r.exit_code == 2, (name, r.output)  # a usage error, judged before any connection
        errors.add(r.stderr.strip().splitlines()[-1])
    assert len(errors) == 1, errors  # same mistake, same message
    assert "--priority" in errors.pop()
    root = typer.main.get_command(app)
    found = {path: command for path, command in _commands(root)}
    options = [next(p for p in found[path].params if p.name == "priority")
               for path in (("pub",), ("task", "submit"), ("cmd",))]
    assert {(tuple(o.opts), o.min, o.max, o.help) for o in options} == {(("--priority", "-p"), 0, 9, options[0].help)}
    assert nxs("--url", dead, "pub", "chat", "x", "-p", "10").exit_code == 2


@pytest.mark.parametrize("port", ["99999", "-5", "0", "65536"])
def test_up_rejects_a_port_out_of_range_as_a_usage_error(port: str, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    r = nxs("up", "--port", port, "--store", str(tmp_path / "s"))
    assert r.exit_code == 2, r.output
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: Invalid value for '--port'"), r.stderr
    assert ("less than or equal to 65535" if int(port) > 0 else "greater than or equal to 1") in error
    assert "in use" not in r.stderr and "waited" not in r.stderr and "within" not in r.stderr
    assert not (tmp_path / "s").exists()  # nothing was started
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_every_port_option_is_bounded(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    assert nxs("up", "--monitor-port", "0", "--store", store).exit_code == 2
    assert nxs("up", "--monitor-port", "70000", "--store", store).exit_code == 2
    # The last client port of a local cluster must be a port too.
    r = nxs("up", "--cluster", "3", "--port", "65534", "--store", store)
    assert r.exit_code == 2 and "65536" in r.stderr and "--port" in r.stderr, r.output
    # A port from the environment or the config file is judged the same way, naming where it came from.
    r = nxs("up", "--store", store, env={"NXS_PORT": "70000"})
    assert r.exit_code == 2 and "NXS_PORT" in r.stderr and "70000" in r.stderr, r.output
    r = nxs("up", "--store", store, env={"NXS_MONITOR_PORT": "0"})
    assert r.exit_code == 2 and "NXS_MONITOR_PORT" in r.stderr, r.output
    assert not (tmp_path / "s").exists()
    for flag in ("--client-port", "--cluster-port", "--monitor-port"):
        r = nxs("deploy", "render", "--host", "a=100.64.0.1", "--out", str(tmp_path / "out"), flag, "0")
        assert r.exit_code == 2 and flag in r.stderr, (flag, r.output)
    assert not (tmp_path / "out").exists()
