"""Reading a report's conversations from the context store (SQLite or Redis alike).

:class:`Analytics` scans the conversations updated since the range's start (a conversation
started in the range is updated in it or later), keeps those *started* in the range, replays
each one's event log, and notes when every conversation of their customers started up to the
repeat-contact window after the range. A scan reads at most ``analytics.max_conversations``
records; beyond that the report says it is truncated and asks for a shorter range.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

from gateway.analytics.journey_map import JourneyMap
from gateway.analytics.path import ConversationPath, replay
from gateway.analytics.report import DAY, Report, ReportFilter, build_report
from gateway.config import Settings
from gateway.context.lifecycle import LifecycleStore
from gateway.core.dialog import DialogEngine
from gateway.core.journeys import load_journeys


def journey_map(settings: Settings) -> JourneyMap:
    """The journeys the gateway runs, as analytics read them."""
    journeys = load_journeys(settings.project_path(settings.journeys.directory), DialogEngine.known_lookups())
    return JourneyMap.from_journeys(journeys, settings.journeys.default)


class Analytics:
    """Reports over one store."""

    def __init__(self, settings: Settings, store: LifecycleStore, *, jmap: JourneyMap | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.jmap = jmap if jmap is not None else journey_map(settings)
        self.clock = clock

    async def paths(self, since: float, until: float) -> tuple[list[ConversationPath], dict[str, list[float]], bool]:
        """Paths of the conversations started in ``[since, until)``, the start times of their
        customers' conversations up to the repeat window after ``until``, and whether the scan
        hit its bound."""
        cfg = self.settings.analytics
        limit = cfg.max_conversations
        horizon = until + cfg.repeat_contact_days * DAY
        records = await self.store.conversations_between(since, horizon, limit=limit + 1)
        truncated = len(records) > limit
        records = records[:limit]
        now = self.clock()
        starts: dict[str, list[float]] = defaultdict(list)
        paths = []
        for record in records:
            if record.customer_id:
                starts[record.customer_id].append(record.created_at)
            if since <= record.created_at < until:
                events = await self.store.events(record.id)  # type: ignore[attr-defined]
                paths.append(replay(record, events, self.jmap, now=now, idle_seconds=cfg.idle_minutes * 60))
        paths.sort(key=lambda p: p.created_at)
        return paths, starts, truncated

    async def report(self, f: ReportFilter) -> Report:
        paths, starts, truncated = await self.paths(f.since, f.until)
        return build_report(paths, starts, self.jmap, f, repeat_days=self.settings.analytics.repeat_contact_days,
                            low_confidence=self.settings.analytics.low_confidence, truncated=truncated)
