"""Scoring every ended conversation: the sweep ``voicegw serve`` runs every ``qa.sweep_seconds``.

Each round reads the conversations updated since the last round's start less the idle window
(a conversation ends by idleness ``analytics.idle_minutes`` after its last update, so it is
still in that range when it does), replays each one, and scores the ended ones that have no
score for their current version with every scorecard that applies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from gateway.analytics.journey_map import JourneyMap
from gateway.analytics.path import replay
from gateway.config import Settings
from gateway.context.lifecycle import LifecycleStore
from gateway.context.store import StoreError
from gateway.governance.qa import applies, evaluate
from gateway.governance.qa_store import QaStore, keep_overrides
from gateway.governance.scorecards import Scorecards

log = logging.getLogger(__name__)

FIRST_LOOKBACK_SECONDS = 86400.0
"""At start the sweep looks a day back (``voicegw qa score --since`` scores older ones)."""


class QaSweep:
    def __init__(self, settings: Settings, store: LifecycleStore, qa: QaStore, cards: Scorecards, jmap: JourneyMap,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.qa = qa
        self.cards = cards
        self.jmap = jmap
        self.clock = clock
        self.since = clock() - FIRST_LOOKBACK_SECONDS
        self.scored = 0
        self._task: asyncio.Task[None] | None = None

    async def score_range(self, since: float, until: float) -> int:
        """Score every ended conversation updated in the range that lacks a score for its version."""
        idle = self.settings.analytics.idle_minutes * 60
        now = self.clock()
        n = 0
        for record in await self.store.conversations_between(since, until):
            events = None
            for card in self.cards.cards:
                old = await self.qa.get(record.id, card.scorecard)
                if old is not None and old.version == record.version:
                    continue
                if events is None:
                    events = await self.store.events(record.id)  # type: ignore[attr-defined]
                    path = replay(record, events, self.jmap, now=now, idle_seconds=idle)
                if not path.ended or not applies(card, path):
                    continue
                await self.qa.put(keep_overrides(evaluate(card, record, events, path, self.jmap, now=now), old))
                n += 1
        self.scored += n
        return n

    async def run_once(self) -> int:
        now = self.clock()
        n = await self.score_range(self.since, now)
        self.since = now - self.settings.analytics.idle_minutes * 60 - self.settings.qa.sweep_seconds
        return n

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="qa-sweep")

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except (StoreError, OSError) as exc:
                log.error("QA sweep failed (next in %.0f s): %s", self.settings.qa.sweep_seconds, exc)
            await asyncio.sleep(self.settings.qa.sweep_seconds)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # stopping: the next start catches up
                pass
            self._task = None
