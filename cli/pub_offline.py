"""What `nxs pub` does when no server with JetStream takes the message: keep it, and say so plainly.

The message goes into this node's outbox file (``<data_dir>/outbox-<instance_id>.sqlite``), the very file
a worker started on this machine with the same ``--id`` and data dir flushes, and pub exits 75
(EX_TEMPFAIL from sysexits.h: not done now, to be retried; what sendmail answers when it queues a
message) with one line on stderr naming the cause, the file, and the command that sends it.

Why not exit 0: the message is not stored, and no one may be about to send it (a CLI user's instance id
is usually the host name, which no worker uses), so success would be a claim the CLI cannot back. Why
not refuse: the message is kept safely (on disk, deduplicated by ``message_id`` when sent), and the
named command is all it takes. ``--no-queue`` refuses instead (exit 1).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from .common import Settings, print_json, say

__all__ = ["QUEUED_EXIT", "outbox_file", "queue", "report_queued"]

QUEUED_EXIT = 75  # EX_TEMPFAIL


def outbox_file(s: Settings) -> Path:
    """This node's outbox, absolute, so the command printed with it works from any directory."""
    from nxs_mesh.client.outbox import outbox_path

    return outbox_path(str(Path(s.config.data_dir).resolve()), s.config.instance_id)


def queue(s: Settings, env: Any, subject: str, *, seal: bool = False) -> Any:
    from nxs_mesh.client.outbox import Outbox
    from nxs_mesh.client.publishing import queue_offline
    from nxs_mesh.client.security import MessageSecurity, outgoing_headers

    security = MessageSecurity.from_config(s.config)  # queued signed (and sealed) as it would be sent
    extra = outgoing_headers(env, seal=seal, grant=None)
    env = security.seal(env) if seal else env

    path = outbox_file(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    box = Outbox(path)
    try:
        return queue_offline(box, env, subject=subject, security=security, extra=extra)
    finally:
        box.close()


def report_queued(s: Settings, res: Any, subject: str, cause: str, *, as_json: bool) -> int:
    """Print what happened (JSON on stdout if asked, one line on stderr) and return the exit code."""
    path = outbox_file(s)
    argv = ["nxs"]
    if s.sources.get("servers") == "flag":  # from the environment or a file, it is there again next time
        argv += ["--url", ",".join(s.config.servers)]
    argv += ["outbox", "flush", "--path", str(path)]
    if as_json:
        print_json({"stream": None, "seq": None, "duplicate": False, "message_id": res.message_id,
                    "subject": subject, "queued": True, "outbox": str(path)})
    say(f"not stored: message {res.message_id} waits in {path}; `{shlex.join(argv)}` sends it once the "
        f"mesh answers (so does a worker running here as --id {s.config.instance_id} with data dir "
        f"{path.parent}). Cause: {' '.join(cause.split())}", style="yellow", err=True)
    return QUEUED_EXIT
