"""Background work that runs again and again: the outreach poller, the campaign runner, the
booked-callback poller, the agents' queue dispatcher.

:class:`Periodic` is one asyncio task that calls ``tick`` every ``every()`` seconds until it is
closed, or sooner when :meth:`Periodic.kick` says there is work. A tick that raises one of the
``expected`` errors (a store or a database away for a moment) is logged as a warning; any other
error is logged with its traceback. Either way the next tick runs: one bad round never stops the
work for good.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Run ``tick`` every ``every()`` seconds in the background (see the module docstring);
    ``wait_first``: wait a period (or a kick) before the first tick."""

    def __init__(self, name: str, tick: Callable[[], Awaitable[Any]], every: Callable[[], float], *,
                 expected: tuple[type[BaseException], ...] = (), wait_first: bool = False) -> None:
        self.name = name
        self._tick = tick
        self._every = every
        self._expected = expected
        self._wait_first = wait_first
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Start ticking (once: a second start changes nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    def kick(self) -> None:
        """Tick now instead of at the end of the period."""
        self._kick.set()

    async def close(self) -> None:
        """Stop ticking; a tick in progress is cancelled."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        if self._wait_first:
            await self._wait()
        while True:
            try:
                await self._tick()
            except self._expected as exc:
                log.warning("%s: this round failed: %s", self.name, exc)
            except Exception:  # a bug in one round must not stop every later one
                log.exception("%s: this round failed", self.name)
            await self._wait()

    async def _wait(self) -> None:
        try:
            await asyncio.wait_for(self._kick.wait(), max(0.0, self._every()))
        except asyncio.TimeoutError:
            pass
        self._kick.clear()
