"""One shared 20 ms clock for the media connectors (AudioSocket, Twilio Media Streams, FreeSWITCH).

Tick ``n`` is due at ``start + n * 20 ms`` of ``loop.time()`` (no drift), and a loop that fell
more than ``MAX_CATCH_UP_SECONDS`` behind skips ahead instead of sending a burst of old frames.
Each tick calls ``tick(now)`` on every registered stream; a stream whose tick raises is ended
alone. The clock runs only while a stream is registered.
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
    total_late: float = 0.0
    skips: int = 0

    def note(self, late: float, streams: int) -> None:
        """Count one tick, ``late`` seconds after it was due, that sends ``streams`` frames."""
        late = max(0.0, late)
        self.ticks += 1
        self.frames += streams
        self.total_late += late
        if late > self.max_late:
            self.max_late = late

    @property
    def mean_late(self) -> float:
        """Mean lateness of a tick, in seconds."""
        return self.total_late / self.ticks if self.ticks else 0.0


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
            streams = list(self.streams)
            self.stats.note(late, len(streams))
            for stream in streams:
                try:
                    stream.tick(now)
                except Exception:  # one call's failure ends that call only
                    log.exception("%s call %s: tick failed; stream closed", self.name, stream.call_id)
                    self.streams.discard(stream)
                    stream.end("error")
