"""Opt-out by SMS reply, and reminders that honour the do-not-call list: the real core, the web
app's SMS channel and outreach, the sample CRM, and an injected clock for the reminders."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.app import build_core
from gateway.context import open_audit
from gateway.core.actions import Originate
from gateway.digital.sms import is_stop
from tests.digital.helpers import start, web_settings

EMMA = "+15556667777"      # sample CRM: device pickup in 3 hours (always within the horizon)
REMINDER = "A-5001"
T0 = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
async def gateway(tmp_path):
    settings = web_settings(tmp_path, compliance={"organisation": "Riverside Services"})
    core = await build_core(settings)
    placed: list[Originate] = []

    async def telephony(cid: str, action: Any) -> None:
        if action.number == EMMA:
            placed.append(action)

    core.register_sink(Originate, telephony)
    runner = await start(tmp_path, core, compliance={"organisation": "Riverside Services"},
                         deps={"store": core.store, "crm": core.crm})
    yield core, runner, placed
    await runner.close()
    await core.close()


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop. ", "UNSUBSCRIBE", "Cancel", "END", "quit", "STOPALL",
                                  "opt out", "Revoke"])
def test_stop_words(text):
    assert is_stop(text)


@pytest.mark.parametrize("text", ["stop by tomorrow", "cancel my appointment", "the end is near", "STOPPED", "CALL"])
def test_not_stop_words(text):
    assert not is_stop(text)


async def test_reminder_says_who_sends_it_and_how_to_stop(gateway):
    core, runner, placed = gateway
    await runner.parts.outreach.run_once(T0)
    body = runner.parts.outbox.messages(to=EMMA)[0].body
    assert body.startswith("Riverside Services (automated message): ")
    assert "device pickup" in body and body.endswith("Reply STOP to opt out.")


async def test_stop_reply_lists_the_number_confirms_once_and_ends_the_reminder(gateway, tmp_path):
    core, runner, placed = gateway
    outreach, inbound = runner.parts.outreach, runner.parts.sms_inbound
    await outreach.run_once(T0)
    cid = outreach.state(REMINDER)["conversation_id"]
    replies = await inbound.receive(EMMA, "Stop")
    assert replies == ["You're unsubscribed: Riverside Services will not call or text you again."]
    assert await core.engine.services.policy.dnc.contains(EMMA)
    assert await inbound.receive(EMMA, "STOP") == []  # confirmed once
    await outreach.run_once(T0 + timedelta(minutes=31))
    assert placed == []  # the unanswered reminder is not escalated to a call
    assert outreach.state(REMINDER)["state"] in ("dnc", "answered")
    audit = open_audit(runner.parts.settings)
    try:
        entries = await audit.entries(conversation_id=cid)
    finally:
        await audit.close()
    opted = [e for e in entries if e.action == "opted_out"]
    assert len(opted) == 2 and opted[-1].detail["via"] == "sms" and opted[-1].detail["added"] == 1
    assert opted[0].detail["added"] == 0


async def test_stop_from_an_unknown_number_gets_only_the_confirmation(gateway):
    core, runner, _ = gateway
    replies = await runner.parts.sms_inbound.receive("+15550001111", "UNSUBSCRIBE")
    assert replies == ["You're unsubscribed: Riverside Services will not call or text you again."]
    assert await core.engine.services.policy.dnc.contains("+1 555 000 1111")


async def test_no_reminder_to_a_listed_number(gateway):
    core, runner, placed = gateway
    await core.engine.services.policy.dnc.add(EMMA, source="test")
    outreach = runner.parts.outreach
    await outreach.run_once(T0)
    assert outreach.state(REMINDER)["state"] == "dnc"
    assert runner.parts.outbox.messages(to=EMMA) == []
    await outreach.run_once(T0 + timedelta(minutes=31))
    assert placed == []
