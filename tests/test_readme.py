"""What the README promises about the library: `Registry` comes from `nxs_mesh`, and `--handlers
module:object` imports from the current directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import nxs_mesh
from nxs_mesh.node.handlers import Registry


def test_registry_is_exported() -> None:
    assert nxs_mesh.Registry is Registry and "Registry" in nxs_mesh.__all__


def test_handlers_import_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--handlers mymod:registry` finds ./mymod.py even from the `nxs` console script, whose sys.path
    holds the script's directory, not the current one."""
    from nxs_mesh.node.handlers import load_handlers

    name = f"readme_handlers_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(
        "from nxs_mesh import Registry\nregistry = Registry()\n\n"
        "@registry.task('resize')\nasync def resize(payload):\n    return payload\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.delitem(sys.modules, name, raising=False)
    registry = load_handlers(Registry(), [f"{name}:registry"], plugins=False)
    assert list(registry.tasks) == ["resize"]
    sys.modules.pop(name, None)
