"""Alerts for people: read the Doctor's ALERTs, and the hook that runs a command or POSTs a URL per alert.

The Doctors store each alert once (deterministic ids), so one reader running the hook calls it once
per alert: run ``nxs alerts --follow --exec 'notify-send "$NXS_ALERT_NODE $NXS_ALERT_EVENT"'`` (or
``--post https://hooks.example/...``) in one place, e.g. as a systemd unit next to a worker.

The command gets the alert as JSON on stdin and in ``NXS_ALERT_JSON``, plus ``NXS_ALERT_EVENT``,
``NXS_ALERT_NODE``, ``NXS_ALERT_SEVERITY``. The URL gets it as a JSON POST body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nxs_mesh.client.mesh import Mesh, Record

__all__ = ["AlertHook", "alert_record", "read_alerts"]

log = logging.getLogger("nxs_mesh.node.alerts")


def alert_record(rec: Record) -> dict[str, Any] | None:
    env = rec.envelope
    if env is None:
        return None
    content = env.content if isinstance(env.content, dict) else {"detail": env.content}
    return {"seq": rec.seq, "time": rec.stored_at.isoformat(), "id": env.id,
            "severity": env.payload.metadata.get("severity", ""), **content}


async def read_alerts(
    mesh: Mesh, *, node: str | None = None, last: int | None = None, since: datetime | None = None,
    follow: bool = False,
) -> AsyncIterator[dict[str, Any]]:
    async for rec in mesh.tail("alert", instance=node, last=last, since=since, follow=follow):
        item = alert_record(rec)
        if item is not None:
            yield item


@dataclass(frozen=True)
class AlertHook:
    """Run ``command`` (shell) and/or POST ``url`` for each alert; failures are logged, never raised."""

    command: str | None = None
    url: str | None = None
    timeout: float = 10.0

    async def fire(self, alert: dict[str, Any]) -> list[str]:
        """Returns the problems met (empty when every action succeeded)."""
        problems = []
        body = json.dumps(alert, default=str)
        if self.command:
            env = {**os.environ, "NXS_ALERT_JSON": body, "NXS_ALERT_EVENT": str(alert.get("event", "")),
                   "NXS_ALERT_NODE": str(alert.get("node", "")), "NXS_ALERT_SEVERITY": str(alert.get("severity", ""))}
            try:
                proc = await asyncio.create_subprocess_shell(self.command, stdin=asyncio.subprocess.PIPE, env=env)
                await asyncio.wait_for(proc.communicate(body.encode() + b"\n"), self.timeout)
                if proc.returncode:
                    problems.append(f"hook command exited {proc.returncode}")
            except (TimeoutError, OSError) as exc:
                problems.append(f"hook command failed: {exc!r}")
        if self.url:
            try:
                await asyncio.to_thread(self._post, body)
            except Exception as exc:  # noqa: BLE001 - any network failure is reported the same way
                problems.append(f"POST {self.url} failed: {exc!r}")
        for p in problems:
            log.warning("%s", p)
        return problems

    def _post(self, body: str) -> None:
        req = urllib.request.Request(self.url or "", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - operator-given URL
            resp.read()
