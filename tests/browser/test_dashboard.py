"""The supervisors' journey dashboard and QA review in Debian's Chromium, over the seeded run of
scripted conversations through the real core: charts drawn, filters applied, an override audited."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import expect

from gateway.analytics.source import journey_map
from gateway.context import open_audit
from gateway.governance.qa_job import QaSweep
from gateway.governance.qa_store import open_qa_store
from gateway.governance.scorecards import load_scorecards
from tests.analytics.seed import Clock, schedule, seeded_run, sqlite_core
from tests.digital.helpers import AGENT_TOKENS, start, web_settings

pytestmark = pytest.mark.browser

RANGE = "since=2025-12-31&until=2026-01-12"
CHARTS = ("outcomes", "transfers", "completion", "funnel", "frustration", "latency", "qa")
SCREENSHOT = os.environ.get("VOICEGW_SCREENSHOT_DIR", "")


async def _sign_in(page, url: str, name: str) -> None:
    response = await page.request.post(url + "/agent/login", form={"token": AGENT_TOKENS[name]}, max_redirects=0)
    assert response.status == 303


async def test_dashboard_draws_charts_filters_and_qa_overrides_are_audited(tmp_path: Path, browser) -> None:
    settings = web_settings(tmp_path)
    clock = Clock()
    core = await sqlite_core(settings, clock)
    await seeded_run(core, clock, schedule())
    qa = open_qa_store(settings)
    await QaSweep(settings, core.store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                  journey_map(settings), clock=clock).score_range(0, clock.now + 1)
    await qa.close()
    runner = await start(tmp_path, core, deps={"store": core.store, "crm": core.crm, "clock": clock})
    try:
        page = await browser.new_page()
        await page.set_viewport_size({"width": 1400, "height": 1000})
        response = await page.goto(f"{runner.url}/dashboard?{RANGE}")
        assert response is not None and response.status == 401
        await _sign_in(page, runner.url, "alice")  # an agent: not for her
        response = await page.goto(f"{runner.url}/dashboard?{RANGE}")
        assert response is not None and response.status == 403
        await _sign_in(page, runner.url, "sam")
        await page.goto(f"{runner.url}/dashboard?{RANGE}")
        await expect(page.locator(".tile[data-measure=conversations] strong")).to_have_text("31")
        await expect(page.locator(".tile[data-measure=containment] strong")).to_have_text("80.0 %")  # 24 of 30
        for name in CHARTS:
            figure = page.locator(f"figure[data-chart={name}] svg")
            await expect(figure).to_be_visible()
            box = await figure.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 150, (name, box)
        # bars and lines really drawn (pygal's rect.rect and path.line), not "no data"
        assert await page.locator("figure[data-chart=outcomes] svg rect.rect").count() >= 6
        assert await page.locator("figure[data-chart=transfers] svg rect.rect").count() == 3
        assert await page.locator("figure[data-chart=frustration] svg path.line").count() >= 1
        assert await page.locator("figure[data-chart=qa] svg rect.rect").count() >= 1
        await expect(page.locator("#table-journeys")).to_contain_text("order_status")
        if SCREENSHOT:
            await page.screenshot(path=str(Path(SCREENSHOT) / "dashboard.png"), full_page=True)
        # the filters: voice only, then one journey
        await page.select_option("#f-channel", "voice")
        await page.click("#filters button")
        await expect(page.locator(".tile[data-measure=conversations] strong")).to_have_text("14")
        assert "channel=voice" in page.url
        await page.select_option("#f-channel", "")
        await page.select_option("#f-journey", "order_status")
        await page.click("#filters button")
        await expect(page.locator(".tile[data-measure=conversations] strong")).to_have_text("19")
        await expect(page.locator("figure[data-chart=funnel]")).to_contain_text("order_status")
        csv = await page.request.get(f"{runner.url}/dashboard?{RANGE}&table=transfers&format=csv")
        assert csv.status == 200 and (await csv.text()).startswith("reason,queue,conversations,share")
        # QA review: the seven conversations that ended without resolution fail an item
        await page.goto(f"{runner.url}/qa?days=400")
        await expect(page.locator("#qa-summary")).to_contain_text("30 conversation(s) scored")
        rows = page.locator("tr.qa-row")
        await expect(rows).to_have_count(7)
        first = rows.first
        cid = await first.get_attribute("data-conversation")
        form = first.locator(".item[data-item=resolved_or_clean_handoff] form")
        await form.locator("select").select_option("pass")
        await form.locator("input[name=comment]").fill("customer got the answer by SMS, card 4111 1111 1111 1111")
        await form.locator("button").click()
        await expect(page.locator(f"tr.qa-row[data-conversation='{cid}'] .override")).to_contain_text(
            "overridden to pass by sam")
        text = await page.locator(f"tr.qa-row[data-conversation='{cid}']").inner_text()
        assert "4111 1111" not in text  # the comment was redacted before it was stored
        if SCREENSHOT:
            await page.screenshot(path=str(Path(SCREENSHOT) / "qa.png"), full_page=True)
    finally:
        await runner.close()
        await core.close()
    audit = open_audit(settings)
    try:
        entries = await audit.entries(conversation_id=cid, limit=10)
        override = next(e for e in entries if e.action == "qa_override")
        assert override.actor == "sam" and override.detail["from"] == "fail" and override.detail["to"] == "pass"
        assert any(e.action == "read_analytics" for e in await audit.entries(limit=100))
    finally:
        await audit.close()
