"""The only rooms that import nats-py: connections, the lean publisher, the pull protocol, replay,
stream and bucket assets, the nats-server runner, and the translation of nats-py's errors.

nats-py imports aiohttp (its WebSocket transport, ~11 MB of resident memory) whenever it is installed,
even for a process that only ever speaks nats:// or tls://. This package imports nats-py with aiohttp
hidden and puts a stand-in in its place that imports aiohttp on first use, so a ws:// or wss:// URL
still works for the mesh (``connection.connect`` loads it up front) and for nats-py used directly.
A process that imported aiohttp (or nats-py) before keeps it as it was.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any


class _OnFirstUse:
    """Stands in for a module nats-py imports at its top: the real one is imported on first attribute use."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use>"

    def __getattr__(self, attr: str) -> Any:
        enable_websocket()
        return getattr(importlib.import_module(self._name), attr)


def _import_nats_without_aiohttp() -> None:
    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment] # `import aiohttp` raises ImportError
    try:
        import nats.aio.transport as nats_transport  # its `try: import aiohttp` now finds None
    finally:
        if sys.modules.get("aiohttp", False) is None:
            del sys.modules["aiohttp"]
    if importlib.util.find_spec("aiohttp") is not None:  # not installed: nats-py's own ImportError stays
        setattr(nats_transport, "aiohttp", _OnFirstUse("aiohttp"))  # noqa: B010 - nats-py's module global
        setattr(nats_transport, "multidict", _OnFirstUse("multidict"))  # noqa: B010


def enable_websocket() -> None:
    """Give nats-py its WebSocket transport (aiohttp) if this package held it back; raises ImportError
    when aiohttp is not installed."""
    import aiohttp
    import multidict
    import nats.aio.transport as nats_transport

    current = getattr(nats_transport, "aiohttp", None)
    if current is None or isinstance(current, _OnFirstUse):
        setattr(nats_transport, "aiohttp", aiohttp)  # noqa: B010 - nats-py's module global, not a typed attribute
        setattr(nats_transport, "multidict", multidict)  # noqa: B010


_import_nats_without_aiohttp()
