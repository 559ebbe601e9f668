"""One shared 20 ms clock for the WebSocket media connectors (Twilio Media Streams, FreeSWITCH).

The same schedule as the AudioSocket server's: tick ``n`` is due at ``start + n * 20 ms`` of
``loop.time()`` (no drift), and a loop that fell more than ``MAX_CATCH_UP_SECONDS`` behind skips
ahead instead of sending a burst of old frames. Each tick calls ``tick(now)`` on every
registered stream; a stream whose tick raises is ended alone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.020
MAX_CATCH_UP_SECONDS = 0.2


class Ticking(Protocol):
    call_id: str

    def tick(self, now: float) -> None: ...

    def end(self, reason: str) -> None: ...


@dataclass
class PacingStats:
    """Tick timing, for benches and tests."""

    ticks: int = 0
    frames: int = 0
    max_late: float = 0.0
    skips: int = 0


class MediaPacer:
    """Calls ``tick(now)`` on every registered stream every 20 ms while any is registered."""

    def __init__(self, name: str):
        self.name = name
        self.streams: set[Ticking] = set()
        self.stats = PacingStats()
        self._task: asyncio.Task[None] | None = None

    def add(self, stream: Ticking) -> None:
        self.streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.name}-pacer")

    def discard(self, stream: Ticking) -> None:
        self.streams.discard(stream)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while self.streams:
            n += 1
            due = start + n * FRAME_SECONDS
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            late = now - due
            if late > MAX_CATCH_UP_SECONDS:
                skipped = int(late / FRAME_SECONDS)
                n += skipped
                self.stats.skips += skipped
            self.stats.ticks += 1
            self.stats.max_late = max(self.stats.max_late, late)
            for stream in list(self.streams):
                self.stats.frames += 1
                try:
                    stream.tick(now)
                except Exception:  # one call's failure ends that call only
                    log.exception("%s call %s: tick failed; stream closed", self.name, stream.call_id)
                    self.streams.discard(stream)
                    stream.end("error")
