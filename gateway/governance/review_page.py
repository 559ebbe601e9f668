"""``GET /qa``: conversations whose QA failed an item; ``POST /qa/override``: a reviewer's verdict.

Supervisors and admins (:data:`Permission.REVIEW_QA`). The list shows each failing item's
detail (steps, channels, event numbers: never what the customer said) and a form to override
its status with a comment. An override is written to the audit log (who, which conversation,
item, from what to what) before it is stored; the comment is redacted like everything else the
gateway keeps. The context itself is one click away through the agent API, audited there.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

from gateway.agents.access import Permission, Via
from gateway.agents.signin import client_address
from gateway.analytics.dashboard import DEFAULT_DAYS, Dashboard, shell
from gateway.context.redaction import Redactor
from gateway.context.store import StoreError
from gateway.governance.qa import QaResult
from gateway.pages import escape, refusal

log = logging.getLogger(__name__)

MAX_COMMENT_CHARS = 500
MAX_ROWS = 200
STATUSES = ("pass", "fail", "n/a")


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


class ReviewPage:
    def __init__(self, dashboard: Dashboard, clock: Callable[[], float] = time.time) -> None:
        self.dashboard = dashboard
        self.qa = dashboard.qa
        self.audit = dashboard.audit
        self.clock = clock
        self.redactor = Redactor()

    async def show(self, request: web.Request) -> web.Response:
        """GET /qa[?days=7&item=ID&all=1]."""
        who = self.dashboard.allowed(request, Permission.REVIEW_QA, "QA review")
        if isinstance(who, web.Response):
            return who
        try:
            days = min(max(float(request.query.get("days", DEFAULT_DAYS)), 0.01), 400.0)
        except ValueError:
            return refusal("QA review", "days must be a number", status=400)
        item_filter = request.query.get("item", "")[:64]
        show_all = request.query.get("all") == "1"
        now = self.clock()
        try:
            await self.audit.write(actor=who.name, role=who.role.value, action="read_qa",
                                   detail={"via": Via.PAGE.value, "address": client_address(request), "days": days})
            results = await self.qa.between(now - days * 86400, now + 1)
        except StoreError as exc:
            log.error("QA review not shown: %s", exc)
            return refusal("QA review", "The QA scores cannot be read right now.", status=503)
        rows = []
        for r in results:
            if not show_all and not r.failing:
                continue
            if item_filter and item_filter not in {i["id"] for i in r.failing}:
                continue
            rows.append(self._row(r, days))
            if len(rows) >= MAX_ROWS:
                break
        scored, passed = len(results), sum(1 for r in results if r.passed)
        head = (f"<p id=\"qa-summary\">{scored} conversation(s) scored in the last {days:g} day(s), {passed} passed. "
                f"<a href=\"/qa?days={days:g}&amp;all=1\">show all</a></p>")
        table = ("<table id=\"qa\"><thead><tr><th>ended (UTC)</th><th>conversation</th><th>outcome</th>"
                 "<th>tasks</th><th>score</th><th>items to review</th></tr></thead><tbody>"
                 + ("".join(rows) or "<tr><td colspan=\"6\">nothing to review</td></tr>") + "</tbody></table>")
        return shell("QA review", head + table)

    def _row(self, r: QaResult, days: float) -> str:
        items = []
        for item in r.items:
            status = r.status_of(item)
            if status != "fail" and not item.get("override"):
                continue
            override = item.get("override")
            note = (f"<div class=\"override\">overridden to {escape(override['status'])} by {escape(override['by'])}: "
                    f"{escape(override.get('comment', ''))}</div>") if override else ""
            options = "".join(f"<option{' selected' if s == status else ''}>{s}</option>" for s in STATUSES)
            items.append(
                f"<div class=\"item\" data-item=\"{escape(item['id'])}\"><span class=\"{escape(status)}\">"
                f"{escape(item['id'])}: {escape(status)}</span> <span class=\"muted\">{escape(item['detail'])}</span>"
                f"{note}<form method=\"post\" action=\"/qa/override\">"
                f"<input type=\"hidden\" name=\"conversation_id\" value=\"{escape(r.conversation_id)}\">"
                f"<input type=\"hidden\" name=\"scorecard\" value=\"{escape(r.scorecard)}\">"
                f"<input type=\"hidden\" name=\"item\" value=\"{escape(item['id'])}\">"
                f"<input type=\"hidden\" name=\"days\" value=\"{days:g}\">"
                f"<select name=\"status\">{options}</select>"
                f"<input name=\"comment\" maxlength=\"{MAX_COMMENT_CHARS}\" required placeholder=\"why\">"
                "<button type=\"submit\">Override</button></form></div>")
        score = f"{r.score * 100:.0f} %" if r.score is not None else "-"
        return (f"<tr class=\"qa-row\" data-conversation=\"{escape(r.conversation_id)}\"><td>{_when(r.ended_at)}</td>"
                f"<td><a href=\"/api/conversations/{escape(r.conversation_id)}/context\">"
                f"{escape(r.conversation_id[:12])}</a></td><td>{escape(r.outcome)}</td>"
                f"<td>{escape(', '.join(r.journeys) or '-')}</td><td>{score}{'' if r.passed else ' (failed)'}</td>"
                f"<td>{''.join(items)}</td></tr>")

    async def override(self, request: web.Request) -> web.Response:
        """POST /qa/override (conversation_id, scorecard, item, status, comment)."""
        who = self.dashboard.allowed(request, Permission.REVIEW_QA, "QA review")
        if isinstance(who, web.Response):
            return who
        form = await request.post()
        cid, card, item_id, status = (str(form.get(k, ""))[:128] for k in ("conversation_id", "scorecard", "item",
                                                                           "status"))
        comment = self.redactor.redact_text(str(form.get("comment", "")).strip()[:MAX_COMMENT_CHARS])
        if status not in STATUSES or not comment:
            return refusal("QA review", "Choose pass, fail or n/a and say why.", status=400)
        try:
            result = await self.qa.get(cid, card)
            item: dict[str, Any] | None = next((i for i in result.items if i["id"] == item_id), None) \
                if result is not None else None
            if result is None or item is None:
                return refusal("QA review", "No such score.", status=404)
            before = result.status_of(item)
            await self.audit.write(actor=who.name, role=who.role.value, action="qa_override", conversation_id=cid,
                                   detail={"scorecard": card, "item": item_id, "from": before, "to": status,
                                           "address": client_address(request)})
            item["override"] = {"status": status, "by": who.name, "comment": comment, "at": self.clock(),
                                "automatic": item["status"]}
            await self.qa.put(result)
        except StoreError as exc:
            log.error("QA override on conversation %s not stored: %s", cid, exc)
            return refusal("QA review", "The override could not be recorded; nothing was changed.", status=503)
        log.info("QA override: conversation %s item %s %s -> %s by %s", cid, item_id, before, status, who.name)
        try:
            days = min(max(float(str(form.get("days", DEFAULT_DAYS))), 0.01), 400.0)
        except ValueError:
            days = DEFAULT_DAYS
        raise web.HTTPSeeOther(f"/qa?days={days:g}&all=1")  # the reviewed row stays in view
