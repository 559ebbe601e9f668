"""The supervisors' pages on the web server: ``/dashboard`` (journey analytics) and ``/qa``
(QA review and overrides), around the core's context store and the QA scores beside it."""

from __future__ import annotations

import logging
import time
from typing import Callable

from aiohttp import web

from gateway.agents.signin import DeskAuth
from gateway.analytics.dashboard import Dashboard
from gateway.analytics.source import Analytics
from gateway.config import Settings
from gateway.context.audit import AuditLog
from gateway.context.lifecycle import LifecycleStore
from gateway.governance.qa_store import QaStore, open_qa_store
from gateway.governance.review_page import ReviewPage

log = logging.getLogger(__name__)


class GovernancePages:
    def __init__(self, qa: QaStore) -> None:
        self.qa = qa

    async def close(self) -> None:
        await self.qa.close()


def add_governance_routes(app: web.Application, settings: Settings, store: LifecycleStore | None, auth: DeskAuth,
                          audit: AuditLog, *, clock: Callable[[], float] = time.time) -> GovernancePages | None:
    """Register the routes; None (and no routes) without a store."""
    if store is None:
        log.info("journey dashboard and QA review not served: no context store given to the web app")
        return None
    qa = open_qa_store(settings)
    dashboard = Dashboard(Analytics(settings, store, clock=clock), qa, auth, audit, clock=clock)
    review = ReviewPage(dashboard, clock=clock)
    app.router.add_get("/dashboard", dashboard.show)
    app.router.add_get("/qa", review.show)
    app.router.add_post("/qa/override", review.override)
    return GovernancePages(qa)
