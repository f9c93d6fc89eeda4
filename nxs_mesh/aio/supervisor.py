"""The owner of a component's background tasks: no task of the mesh runs without one.

    sup = Supervisor("node nxs-node-001", on_change=wake_status)
    sup.keep("heartbeat", heartbeat_loop)       # a loop: restarted with backoff if it dies
    sup.spawn("alert dead n2", alert(...))      # a one-shot action: tracked, its failure logged
    sup.problems                                # {"heartbeat": "BrokenError: ..."} while a loop is down
    await sup.stop()                            # cancel everything and wait for it

A loop that raises is logged with its cause, listed in ``problems`` (its owner reports itself
degraded), and started again after a backoff; it leaves ``problems`` once it has run ``healthy_after``
seconds without failing. A loop that returns has finished its job and is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nxs_mesh.aio.retry import backoff_delay

__all__ = ["Supervisor"]

log = logging.getLogger("nxs_mesh.aio.supervisor")

LoopFactory = Callable[[], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        owner: str,
        *,
        on_change: Callable[[], None] | None = None,
        healthy_after: float = 5.0,
        backoff_base: float = 0.2,
        backoff_cap: float = 10.0,
    ) -> None:
        self.owner = owner
        self.healthy_after = healthy_after
        self._base, self._cap = backoff_base, backoff_cap
        self._on_change = on_change
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._oneshots: set[asyncio.Task[Any]] = set()
        self._failed: dict[str, str] = {}
        self._restarted_at: dict[str, float] = {}
        self.restarts = 0
        self._stopping = False

    def __repr__(self) -> str:
        return (f"<Supervisor {self.owner!r} [{len(self._tasks)} loops, {len(self._oneshots)} actions, "
                f"{len(self.problems)} failing]>")

    @property
    def problems(self) -> dict[str, str]:
        """Loops that died and have not yet run ``healthy_after`` seconds since their restart."""
        if self._failed:
            now = asyncio.get_running_loop().time()
            for name in [n for n, t in self._restarted_at.items() if now - t >= self.healthy_after]:
                if name in self._failed and name in self._tasks and not self._tasks[name].done():
                    del self._failed[name]
                    del self._restarted_at[name]
                    log.info("%s: %s healthy again", self.owner, name)
                    self._changed()
        return dict(self._failed)

    def keep(self, name: str, factory: LoopFactory) -> None:
        """Run ``factory()`` as a supervised loop named ``name`` (restarted with backoff when it dies)."""
        if self._stopping:
            raise RuntimeError(f"{self.owner}: supervisor is stopping; cannot start {name}")
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"{self.owner}: loop {name} already runs")
        self._tasks[name] = asyncio.create_task(self._run(name, factory), name=f"nxs:{self.owner}:{name}")

    def task(self, name: str) -> asyncio.Task[None] | None:
        """The task of loop ``name`` (to wait for it to finish), or None."""
        return self._tasks.get(name)

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a one-shot action; a failure is logged (never lost), cancellation on ``stop()``."""
        if self._stopping:
            coro.close()
            raise RuntimeError(f"{self.owner}: supervisor is stopping; cannot start {name}")
        task = asyncio.create_task(coro, name=f"nxs:{self.owner}:{name}")
        self._oneshots.add(task)
        task.add_done_callback(self._action_done)
        return task

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel every loop; give one-shot actions ``timeout`` seconds, then cancel them too."""
        self._stopping = True
        loops = list(self._tasks.values())
        for task in loops:
            task.cancel()
        if self._oneshots:
            _, late = await asyncio.wait(set(self._oneshots), timeout=timeout)
            for task in late:
                task.cancel()
            loops.extend(late)
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _run(self, name: str, factory: LoopFactory) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            started = loop.time()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the point of a supervisor: any death is recorded
                if loop.time() - started > self.healthy_after:
                    attempt = 0
                attempt += 1
                self._failed[name] = f"{type(exc).__name__}: {exc}"
                self._restarted_at.pop(name, None)
                log.error("%s: %s died (%s); restarting (attempt %d)", self.owner, name, self._failed[name],
                          attempt, exc_info=exc)
                self._changed()
            await asyncio.sleep(backoff_delay(attempt, base=self._base, cap=self._cap, jitter=False))  # sleep-ok: restart backoff
            self.restarts += 1
            self._restarted_at[name] = loop.time()

    def _action_done(self, task: asyncio.Task[Any]) -> None:
        self._oneshots.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: %s failed: %r", self.owner, task.get_name(), exc, exc_info=exc)

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # noqa: BLE001 - a notification must not kill the supervisor
                log.exception("%s: change callback failed", self.owner)
