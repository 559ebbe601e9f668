"""``GET /dashboard``: the supervisors' journey dashboard (and ``/dashboard.csv?table=...``).

A form of filters (range, journey, channel, queue) sent by GET, headline figures, the charts of
:mod:`gateway.analytics.charts` and the report's tables below them, with QA results from the
QA store. Supervisors and admins only (:data:`Permission.READ_ANALYTICS`), signed in at the
agent desktop; each view is in the audit log with its filters. No script: the page is plain
HTML and inline SVG, so it works offline and with scripts blocked.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

from gateway.agents.access import Permission, Via, authorize
from gateway.agents.accounts import Principal
from gateway.agents.signin import DeskAuth, client_address
from gateway.analytics import charts
from gateway.analytics.cli import parse_time
from gateway.analytics.report import DAY, Report, ReportFilter
from gateway.analytics.source import Analytics
from gateway.analytics.tables import Table, cell, to_csv
from gateway.context.audit import AuditLog
from gateway.context.store import StoreError
from gateway.pages import escape, refusal

log = logging.getLogger(__name__)

DEFAULT_DAYS = 7
MAX_FILTER_CHARS = 64
CHANNELS = ("voice", "chat", "sms", "web")


def shell(title: str, body: str, *, status: int = 200) -> web.Response:
    """A wide page in the gateway's look (no script)."""
    text = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><link rel=\"stylesheet\" href=\"/static/gateway.css\">"
            "<link rel=\"stylesheet\" href=\"/static/governance.css\"></head>"
            f"<body><main class=\"wide\"><nav><a href=\"/dashboard\">Journeys</a> <a href=\"/qa\">QA review</a> "
            f"<a href=\"/agent\">Agent desktop</a></nav><h1>{escape(title)}</h1>{body}</main></body></html>")
    response = web.Response(text=text, status=status, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'none'"
    return response


def html_table(t: Table) -> str:
    head = "".join(f"<th>{escape(c.name)}</th>" for c in t.columns)
    rows = "".join("<tr>" + "".join(f"<td class=\"{c.type}\">{escape(cell(v, c.type))}</td>"
                                    for v, c in zip(row, t.columns)) + "</tr>" for row in t.rows)
    return (f"<section class=\"table\" id=\"table-{escape(t.name)}\"><h2>{escape(t.title)}</h2>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows or '<tr><td>(none)</td></tr>'}</tbody></table>"
            f"<a class=\"muted\" href=\"?{{query}}&amp;table={escape(t.name)}&amp;format=csv\">CSV</a></section>")


class Dashboard:
    def __init__(self, analytics: Analytics, qa: Any, auth: DeskAuth, audit: AuditLog,
                 clock: Callable[[], float] = time.time) -> None:
        self.analytics = analytics
        self.qa = qa
        self.auth = auth
        self.audit = audit
        self.clock = clock

    def allowed(self, request: web.Request, permission: Permission, title: str) -> Principal | web.Response:
        principal = self.auth.session(request)
        if principal is None:
            return refusal(title, "Sign in at the agent desktop first (/agent).", status=401)
        decision = authorize(principal, permission)
        if not decision:
            log.warning("%s refused to %s %s from %s", title, principal.role.value, principal.name,
                        client_address(request))
            return refusal(title, decision.reason, status=403)
        return principal

    def filter_from(self, query: Any) -> ReportFilter:
        now = self.clock()
        since = parse_time(query.get("since") or f"{DEFAULT_DAYS}d", now)
        until = parse_time(query["until"], now) + (DAY if len(query["until"]) == 10 else 0) if query.get("until") \
            else now
        if until <= since:
            raise ValueError("the end of the range must be after its start")
        jmap = self.analytics.jmap
        journey, channel, queue = (str(query.get(k, ""))[:MAX_FILTER_CHARS] for k in ("journey", "channel", "queue"))
        if journey and journey not in jmap.tasks:
            raise ValueError(f"no task journey {journey!r}")
        if channel and channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
        if queue and queue not in set(jmap.queues.values()) | {self.analytics.settings.journeys.agent_queue}:
            raise ValueError(f"no queue {queue!r}")
        return ReportFilter(since, until, journey=journey, channel=channel, queue=queue)

    async def show(self, request: web.Request) -> web.StreamResponse:
        """GET /dashboard[?since=&until=&journey=&channel=&queue=][&table=NAME&format=csv]."""
        who = self.allowed(request, Permission.READ_ANALYTICS, "Journey dashboard")
        if isinstance(who, web.Response):
            return who
        try:
            f = self.filter_from(request.query)
        except ValueError as exc:
            return refusal("Journey dashboard", str(exc), status=400)
        try:
            await self.audit.write(actor=who.name, role=who.role.value, action="read_analytics",
                                   detail={"via": Via.PAGE.value, "address": client_address(request),
                                           "filter": f.describe()})
            report = await self.analytics.report(f)
            qa = await self.qa.between(f.since, f.until) if self.qa is not None else []
        except StoreError as exc:
            log.error("dashboard not shown: %s", exc)
            return refusal("Journey dashboard", "A store cannot be read right now; try again shortly.", status=503)
        if request.query.get("format") == "csv":
            name = request.query.get("table", "")
            table = next((t for t in report.tables if t.name == name), None)
            if table is None:
                return refusal("Journey dashboard", f"no table {name!r}", status=404)
            return web.Response(text=to_csv(table), content_type="text/csv", headers={
                "Content-Disposition": f"attachment; filename=\"{table.name}.csv\"", "Cache-Control": "no-store"})
        return shell("Journey dashboard", self.render(report, f, request.query_string, qa))

    def _form(self, f: ReportFilter) -> str:
        jmap = self.analytics.jmap

        def options(name: str, values: list[str], chosen: str) -> str:
            opts = "".join(f"<option value=\"{escape(v)}\"{' selected' if v == chosen else ''}>{escape(v or 'all')}"
                           "</option>" for v in [""] + values)
            return f"<label>{name}<select name=\"{name}\" id=\"f-{name}\">{opts}</select></label>"

        day = lambda t: datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d")  # noqa: E731
        queues = sorted({q for q in jmap.queues.values() if q} | {self.analytics.settings.journeys.agent_queue})
        return ("<form method=\"get\" action=\"/dashboard\" id=\"filters\" class=\"filters\">"
                f"<label>from<input type=\"date\" name=\"since\" id=\"f-since\" value=\"{day(f.since)}\"></label>"
                f"<label>to<input type=\"date\" name=\"until\" id=\"f-until\" value=\"{day(f.until - 1)}\"></label>"
                + options("journey", sorted(jmap.tasks), f.journey) + options("channel", list(CHANNELS), f.channel)
                + options("queue", queues, f.queue) + "<button type=\"submit\">Show</button></form>")

    def render(self, report: Report, f: ReportFilter, query: str, qa: list[Any]) -> str:
        h = report.headline
        scored = len(qa)
        passed = sum(1 for r in qa if r.passed)
        tiles = [("conversations", str(h["conversations"])), ("ended", str(h["ended"])),
                 ("containment", cell(h["containment"], "percent")), ("transfers", cell(h["transfer_rate"], "percent")),
                 ("abandonment", cell(h["abandonment"], "percent")),
                 ("first-contact resolution", cell(h["first_contact_resolution"], "percent")),
                 ("QA pass rate", cell(passed / scored if scored else None, "percent"))]
        tile_html = "".join(f"<div class=\"tile\" data-measure=\"{escape(k)}\"><span>{escape(k)}</span>"
                            f"<strong>{escape(v)}</strong></div>" for k, v in tiles)
        failing: Counter[str] = Counter()
        for r in qa:
            for item in r.failing:
                failing[item["id"]] += 1
        busiest = max(report.table("journeys").as_dicts(), key=lambda r: r["entered"], default=None)
        funnel_journey = f.journey or (busiest["journey"] if busiest else "")
        figures = [charts.outcomes_by_channel(report.table("channels")), charts.transfer_reasons(report.table("transfers")),
                   charts.task_completion(report.table("journeys")), charts.funnel(report.table("funnel"), funnel_journey),
                   charts.frustration(report.table("frustration")), charts.latency(report.table("latency")),
                   charts.qa_failures([(k, n, scored) for k, n in failing.most_common()])]
        warning = "<p class=\"refused\">Too many conversations: the range was cut; choose a shorter one.</p>" \
            if report.truncated else ""
        tables = "".join(html_table(t).replace("{query}", escape(query)) for t in report.tables)
        return (self._form(f) + warning + f"<p class=\"muted\" id=\"range\">{escape(f.describe())}</p>"
                f"<div class=\"tiles\">{tile_html}</div><div class=\"charts\">{''.join(figures)}</div>{tables}")
