"""The only rooms that import nats-py: connections, the lean publisher, the pull protocol, replay,
stream and bucket assets, the nats-server runner, and the translation of nats-py's errors.

nats-py imports aiohttp (its WebSocket transport, ~11 MB of resident memory) whenever it is installed,
even for a process that only ever speaks nats:// or tls://. This package imports nats-py with aiohttp
hidden, and ``connection.connect`` loads it on first use of a ws:// or wss:// URL (``enable_websocket``).
A process that imported aiohttp (or nats-py) before keeps it as it was.
"""

from __future__ import annotations

import sys


def _import_nats_without_aiohttp() -> None:
    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment] # `import aiohttp` raises ImportError
    try:
        import nats.aio.transport  # noqa: F401 - its `try: import aiohttp` now finds None
    finally:
        if sys.modules.get("aiohttp", False) is None:
            del sys.modules["aiohttp"]


def enable_websocket() -> None:
    """Give nats-py its WebSocket transport (aiohttp) if this package hid it; raises ImportError
    when aiohttp is not installed."""
    import aiohttp
    import multidict
    import nats.aio.transport as nats_transport

    if getattr(nats_transport, "aiohttp", None) is None:
        setattr(nats_transport, "aiohttp", aiohttp)  # noqa: B010 - nats-py's module global, not a typed attribute
        setattr(nats_transport, "multidict", multidict)  # noqa: B010


_import_nats_without_aiohttp()
