"""The package version, read once from the installed distribution (pyproject.toml is its one source)."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("nxs-mesh")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0+unknown"

__all__ = ["VERSION"]
