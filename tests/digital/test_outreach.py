"""Proactive outreach through the real core and the sample CRM, with an injected clock:
SMS first, escalation to a call when unanswered, answers by SMS or by switching to chat."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from gateway.app import build_core
from gateway.core.actions import Originate
from gateway.digital.outreach import as_reminder
from tests.digital.helpers import recv_until, start, web_settings

EMMA = "+15556667777"      # sample CRM: device pickup in 3 hours (always within the horizon)
REMINDER = "A-5001"
T0 = datetime.now(timezone.utc).replace(microsecond=0)


async def _gateway(tmp_path: Any) -> tuple[Any, Any, list[Originate]]:
    settings = web_settings(tmp_path, outreach={"escalate_after_minutes": 30})
    core = await build_core(settings)
    placed: list[Originate] = []

    async def telephony(cid: str, action: Any) -> None:
        if action.number == EMMA:  # other demo customers may be due too, depending on the hour
            placed.append(action)

    core.register_sink(Originate, telephony)
    runner = await start(tmp_path, core, outreach={"escalate_after_minutes": 30},
                         deps={"store": core.store, "crm": core.crm})
    return core, runner, placed


async def _close(core: Any, runner: Any) -> None:
    await runner.close()
    await core.store.close()


def test_reminder_from_crm_pair():
    from gateway.integrations.crm import Appointment, Customer
    from datetime import date
    customer = Customer("C9", "Zoe Park", "+15550009999", "z@example.org", "1", date(1990, 1, 1), "0000")
    appt = Appointment("A-9", "C9", "boiler service", datetime(2026, 12, 1, 9, 30), "1 Main St", "scheduled")
    r = as_reminder((customer, appt))
    assert (r.id, r.customer_id, r.phone, r.link_purpose) == ("A-9", "C9", "+15550009999", "chat")
    assert r.text == "Hello Zoe, a reminder of your boiler service on Tuesday 01 December at 09:30 at 1 Main St."


async def test_unanswered_sms_escalates_to_a_call(tmp_path):
    core, runner, placed = await _gateway(tmp_path)
    outreach = runner.parts.outreach
    try:
        await outreach.run_once(T0)
        state = outreach.state(REMINDER)
        assert state["state"] == "sms_sent" and state["number"] == EMMA
        sms = runner.parts.outbox.messages(to=EMMA)
        assert len(sms) == 1
        assert "device pickup" in sms[0].body and "Reply YES" in sms[0].body and "/chat?c=" in sms[0].body
        await outreach.run_once(T0 + timedelta(minutes=10))
        await outreach.run_once(T0 + timedelta(minutes=29))
        assert outreach.state(REMINDER)["state"] == "sms_sent" and placed == []
        assert len(runner.parts.outbox.messages(to=EMMA)) == 1  # not sent twice
        await outreach.run_once(T0 + timedelta(minutes=31))
        assert outreach.state(REMINDER)["state"] == "escalated"
        assert [(p.number, p.conversation_id, p.reason) for p in placed] == [
            (EMMA, state["conversation_id"], "reminder")]
        assert placed[0].callback  # the answered call will prove it is the one the gateway placed
        await outreach.run_once(T0 + timedelta(minutes=90))
        assert len(placed) == 1  # escalated once
    finally:
        await _close(core, runner)


async def test_sms_answer_stops_escalation(tmp_path):
    core, runner, placed = await _gateway(tmp_path)
    outreach = runner.parts.outreach
    try:
        await outreach.run_once(T0)
        replies = await runner.parts.sms_inbound.receive(EMMA, "YES")
        assert any("confirmed" in r for r in replies)
        await outreach.run_once(T0 + timedelta(minutes=31))
        assert outreach.state(REMINDER)["state"] == "answered" and placed == []
        ctx = await core.context(outreach.state(REMINDER)["conversation_id"])
        assert ctx["channels"] == ["sms"] and ctx["customer"]["id"] == "C005"
    finally:
        await _close(core, runner)


async def test_customer_switches_to_chat_midway(tmp_path):
    core, runner, placed = await _gateway(tmp_path)
    outreach = runner.parts.outreach
    try:
        await outreach.run_once(T0)
        cid = outreach.state(REMINDER)["conversation_id"]
        link = re.search(r"http://\S+/chat\?c=(\S+)", runner.parts.outbox.messages(to=EMMA)[0].body)
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{runner.url}/chat/ws?c={link.group(1)}") as ws:
            frames: list[dict] = []
            await recv_until(ws, "ask", frames)
            assert frames[0]["conversation_id"] == cid and frames[0]["resumed"] is True
            assert "device pickup" in frames[-1]["text"] and frames[-1]["expect"]["kind"] == "yesno"
            await ws.send_json({"type": "message", "text": "no"})
            frame = await recv_until(ws, "ask")
            assert "What day" in frame["text"]
        await outreach.run_once(T0 + timedelta(minutes=31))
        assert outreach.state(REMINDER)["state"] == "answered" and placed == []
        assert (await core.context(cid))["channels"] == ["sms", "chat"]
    finally:
        await _close(core, runner)


async def test_reply_call_switches_to_voice_at_once(tmp_path):
    core, runner, placed = await _gateway(tmp_path)
    outreach = runner.parts.outreach
    try:
        await outreach.run_once(T0)
        replies = await runner.parts.sms_inbound.receive(EMMA, "call")
        assert any("Calling you now" in r for r in replies)
        assert [p.number for p in placed] == [EMMA]
        await outreach.run_once(T0 + timedelta(minutes=31))
        assert outreach.state(REMINDER)["state"] == "answered" and len(placed) == 1
    finally:
        await _close(core, runner)
