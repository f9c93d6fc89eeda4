"""A test hook: stop this process at a named step, so a test can ``kill -9`` it exactly there.

    NXS_PAUSE_AT=prepared nxs node run --agent agent:a ...    # freezes (SIGSTOP) when A has prepared

The process logs ``test hook NXS_PAUSE_AT: paused at <step>`` (warning) and stops itself; the test
waits for that line and kills it. Steps (``node.handoff``): ``prepared`` (the owner moved the record to
handing-off and stored the bundle, before answering), ``loaded`` (the target loaded the context,
before its commit), ``committed`` (the target's commit is written, before it drains), ``release`` (the
old owner was told to stand by). Unset in production: the check is one environment lookup per step.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Final

__all__ = ["ENV", "pause_at"]

ENV: Final = "NXS_PAUSE_AT"

log = logging.getLogger("nxs_mesh.node.pause")


def pause_at(step: str) -> None:
    """Stop the whole process (SIGSTOP) when ``step`` is listed in ``$NXS_PAUSE_AT`` (comma-separated)."""
    if step not in os.environ.get(ENV, "").split(","):
        return
    log.warning("test hook %s: paused at %s", ENV, step)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
