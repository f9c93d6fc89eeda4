"""The command line as a new user meets it: --version and help text. In-process through Typer's CliRunner."""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from nxs_cli.app import app
from typer.testing import CliRunner


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
