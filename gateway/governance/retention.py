"""Retention: how long each kind of data is kept, and the purge ``voicegw serve`` runs on schedule.

``retention:`` in the configuration gives days per kind (0 = for ever):

| kind | what goes | where |
| --- | --- | --- |
| ``conversations_days`` | whole conversations last updated before (record, event log, feed, QA scores) | context store |
| ``transcripts_days`` | what was said, typed and keyed, and phone numbers, inside older event logs | context store |
| ``slots_days`` | slots, working state and trust ledger of older records | context store |
| ``sms_days`` | SMS messages, threads and reminder records | ``sms.db`` |
| ``audit_days`` | audit entries (its own policy: usually longer than what it is about) | audit log |
| ``delivery_days`` | webhook dead letters and feed entries | events out |

Housekeeping with fixed reasons runs alongside: used follow-up links a day after any link
expires, counter hits older than any window, agent assignments after their grant. Call
recordings are not kept by the gateway yet (a later issue), so there is nothing of them to purge.
Each run that removes something writes one audit entry saying how much, by store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from gateway.agents.assignments import ASSIGNMENT_DAYS
from gateway.config import RetentionSettings, Settings
from gateway.context.recordings import expire_recordings
from gateway.context.audit import AuditLog
from gateway.context.lifecycle import Cutoffs, LifecycleStore
from gateway.context.store import StoreError
from gateway.governance.side_stores import COUNTER_WINDOW_SECONDS, expire_sqlite

log = logging.getLogger(__name__)

DAY = 86400.0
ACTOR = "retention"


@dataclass(frozen=True)
class Policy:
    """Cutoff times for one run at ``now``."""

    cutoffs: Cutoffs
    sms: float
    audit: float
    delivery: float

    @classmethod
    def at(cls, cfg: RetentionSettings, now: float) -> "Policy":
        def before(days: float) -> float:
            return now - days * DAY if days > 0 else 0.0

        delivery = before(cfg.delivery_days)
        return cls(Cutoffs(conversations=before(cfg.conversations_days), transcripts=before(cfg.transcripts_days),
                           slots=before(cfg.slots_days), feed=delivery),
                   before(cfg.sms_days), before(cfg.audit_days), delivery)


async def purge(settings: Settings, store: LifecycleStore, audit: AuditLog, *, now: float,
                deliveries: Any = None, qa: Any = None) -> dict[str, dict[str, int]]:
    """One retention run across every store; what it removed, by store."""
    policy = Policy.at(settings.retention, now)
    done: dict[str, dict[str, int]] = {}
    if qa is not None and policy.cutoffs.conversations:
        done["qa scores"] = {"scores": await qa.expire(policy.cutoffs.conversations)}
    done["conversations"] = (await store.expire(policy.cutoffs, actor=ACTOR)).as_dict()
    links_ttl = settings.links.ttl_minutes * 60
    done["side stores"] = expire_sqlite(
        settings.data_path("."), sms_before=policy.sms, links_before=now - links_ttl - DAY,
        counters_before=now - COUNTER_WINDOW_SECONDS, assignments_before=now - ASSIGNMENT_DAYS * DAY,
        redis=settings.context.backend == "redis").as_dict()
    recordings_before = now - settings.retention.recordings_days * DAY if settings.retention.recordings_days else 0.0
    expired_recordings = expire_recordings(settings.data_path("."), recordings_before)
    if expired_recordings:
        done["call recordings"] = {"files": expired_recordings}
    if deliveries is not None and policy.delivery:
        done["webhook dead letters"] = {"dead_letters": await deliveries.expire(policy.delivery)}
    if policy.audit:
        done["audit log"] = {"entries": await audit.purge_before(policy.audit, actor=ACTOR)}  # type: ignore[attr-defined]
    done = {k: {n: c for n, c in v.items() if c} for k, v in done.items()}
    if any(done.values()):  # a run that removed nothing leaves no entry (it runs every hour)
        await audit.write(actor=ACTOR, role="system", action="retention_purge",
                          detail={k: sum(v.values()) for k, v in done.items() if v})
    return done


class RetentionJob:
    """The scheduled purge inside ``voicegw serve`` (every ``retention.run_minutes``)."""

    def __init__(self, settings: Settings, store: LifecycleStore, audit: AuditLog, *, deliveries: Any = None,
                 qa: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.deliveries = deliveries
        self.qa = qa
        self.clock = clock
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def run_once(self) -> dict[str, dict[str, int]]:
        done = await purge(self.settings, self.store, self.audit, now=self.clock(), deliveries=self.deliveries,
                           qa=self.qa)
        self.runs += 1
        if any(done.values()):
            log.info("retention purge: %s", {k: v for k, v in done.items() if v})
        return done

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except (StoreError, OSError, ValueError) as exc:
                log.error("retention purge failed (next run in %.0f minutes): %s", self.settings.retention.run_minutes,
                          exc)
            await asyncio.sleep(self.settings.retention.run_minutes * 60)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # stopping: a purge cut short resumes next start
                pass
            self._task = None
