"""Campaigns through the real core and web app, with a clock the test controls: pacing, the
concurrency cap, quiet hours in the customer's time zone, the do-not-call list, retries with
backoff on busy / no answer / machine, SMS first and a call only when needed, opt-out."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.core.events import ChannelClosed
from tests.digital.campaign_helpers import CUSTOMERS, T0, campaign_gateway, csv_of, customers

ALICE, BOB, CARMEN, DAVID, EMMA, FARID = (CUSTOMERS[c] for c in ("C001", "C002", "C003", "C004", "C005", "C006"))


@pytest.fixture
async def gw(tmp_path):
    core, runner, carrier = await campaign_gateway(tmp_path)
    yield core, runner, carrier
    await runner.close()
    await core.close()


async def make(runner, name: str, csv: str, **settings) -> None:
    admin = runner.parts.campaign_admin
    await admin.create(name, settings)
    report = await admin.import_csv(name, csv)
    assert not report.errors
    await admin.start(name)


async def tick(runner, at) -> None:
    assert await runner.parts.campaigns.run_once(at)


async def contact(runner, name, ref):
    return await runner.parts.campaign_admin.store.contact(name, ref)


async def outcomes(runner, name, ref):
    attempts = await runner.parts.campaign_admin.attempts(name, ref=ref)
    return [a["outcome"] for a in reversed(attempts)]


async def test_pacing_holds_calls_per_minute(gw):
    core, runner, carrier = gw
    await make(runner, "pace", customers("C001", "C002", "C003", "C004", "C005", "C006"), sms_first=False,
               calls_per_minute=2, max_concurrent=10)
    await tick(runner, T0)
    assert len(carrier.placed) == 2
    await tick(runner, T0 + timedelta(seconds=30))
    await tick(runner, T0 + timedelta(seconds=59))
    assert len(carrier.placed) == 2  # the minute since the first two is not over
    await tick(runner, T0 + timedelta(seconds=61))
    assert len(carrier.placed) == 4
    await tick(runner, T0 + timedelta(seconds=122))
    assert len(carrier.placed) == 6 and sorted(carrier.numbers()) == sorted(CUSTOMERS.values())
    status = await runner.parts.campaign_admin.status("pace")
    assert status["contacts"] == {"active": 6} and status["outcomes"] == {"calling": 6}


async def test_concurrency_cap_waits_for_a_call_to_end(gw):
    core, runner, carrier = gw
    await make(runner, "cap", customers("C001", "C002", "C003", "C004"), sms_first=False, calls_per_minute=100,
               max_concurrent=2)
    await tick(runner, T0)
    first = carrier.numbers()
    assert first == [ALICE, BOB]
    await tick(runner, T0 + timedelta(seconds=10))
    assert len(carrier.placed) == 2
    await carrier.fail(ALICE, "busy")
    await carrier.answer(BOB, say="yes")
    await tick(runner, T0 + timedelta(seconds=20))  # both settle, two more start
    assert carrier.numbers() == [ALICE, BOB, CARMEN, DAVID]
    assert await outcomes(runner, "cap", "c001") == ["busy"] and await outcomes(runner, "cap", "c002") == ["answered"]
    assert (await contact(runner, "cap", "c002")).status.value == "reached"
    alice = await contact(runner, "cap", "c001")
    assert alice.status.value == "pending" and alice.next_at == (T0 + timedelta(seconds=20, minutes=30)).timestamp()


async def test_quiet_hours_in_each_customers_time_zone(gw):
    core, runner, carrier = gw
    csv = csv_of([{"id": "ny", "phone": ALICE, "customer_id": "C001", "tz": "America/New_York"},
                  {"id": "berlin", "phone": BOB, "customer_id": "C002", "tz": "Europe/Berlin"},
                  {"id": "tokyo", "phone": CARMEN, "customer_id": "C003"}])   # the campaign's zone
    await make(runner, "quiet", csv, sms_first=False, timezone="Asia/Tokyo", calls_per_minute=100)
    at = T0.replace(hour=7, minute=30)  # 03:30 in New York, 08:30 in Berlin, 16:30 in Tokyo
    await tick(runner, at)
    assert sorted(carrier.numbers()) == sorted([BOB, CARMEN])
    ny = await contact(runner, "quiet", "ny")
    assert ny.status.value == "pending" and ny.attempts == 0  # deferred, no attempt used
    assert ny.next_at == T0.replace(hour=12, minute=0).timestamp()  # 08:00 EDT
    await tick(runner, T0.replace(hour=11, minute=59))
    assert ALICE not in carrier.numbers()
    await tick(runner, T0.replace(hour=12, minute=0))
    assert carrier.numbers().count(ALICE) == 1
    # a contact added at 20:30 UTC (21:30 in Berlin) waits for 08:00 there: 07:00 UTC the next day
    late = csv_of([{"id": "late", "phone": FARID, "customer_id": "C006", "tz": "Europe/Berlin"}])
    assert (await runner.parts.campaign_admin.import_csv("quiet", late)).added == 1
    await tick(runner, T0.replace(hour=20, minute=30))
    assert FARID not in carrier.numbers()
    next_day = T0 + timedelta(days=1)
    assert (await contact(runner, "quiet", "late")).next_at == next_day.replace(hour=7, minute=0).timestamp()
    await tick(runner, next_day.replace(hour=6, minute=59))
    assert FARID not in carrier.numbers()
    await tick(runner, next_day.replace(hour=7, minute=0))
    assert carrier.numbers().count(FARID) == 1


async def test_do_not_call_list_is_skipped(gw):
    core, runner, carrier = gw
    await core.engine.services.policy.dnc.add(ALICE, source="test")
    await make(runner, "dnc", customers("C001", "C002"), sms_first=True)
    await tick(runner, T0)
    assert runner.parts.outbox.messages(to=ALICE) == [] and len(runner.parts.outbox.messages(to=BOB)) == 1
    alice = await contact(runner, "dnc", "c001")
    assert alice.status.value == "dnc" and alice.attempts == 0
    await tick(runner, T0 + timedelta(hours=2))
    assert ALICE not in carrier.numbers()


async def test_retries_with_backoff_then_exhausted(gw):
    core, runner, carrier = gw
    await make(runner, "retry", customers("C005"), sms_first=False, max_attempts=4, retry_minutes=30,
               retry_backoff=2)
    t = T0
    await tick(runner, t)
    await carrier.fail(EMMA, "busy")
    await tick(runner, t + timedelta(seconds=5))                 # busy: next in 30 min
    await tick(runner, t + timedelta(minutes=30, seconds=4))
    assert len(carrier.placed) == 1
    await tick(runner, t + timedelta(minutes=30, seconds=5))
    assert len(carrier.placed) == 2
    await carrier.fail(EMMA, "no_answer")
    t2 = t + timedelta(minutes=31)
    await tick(runner, t2)                                       # no answer: next in 60 min
    await tick(runner, t2 + timedelta(minutes=59))
    assert len(carrier.placed) == 2
    await tick(runner, t2 + timedelta(minutes=60))
    assert len(carrier.placed) == 3
    await carrier.answer(EMMA, machine=True)                     # a voicemail: next in 120 min
    t3 = t2 + timedelta(minutes=61)
    await tick(runner, t3)
    await tick(runner, t3 + timedelta(minutes=119))
    assert len(carrier.placed) == 3
    await tick(runner, t3 + timedelta(minutes=120))
    assert len(carrier.placed) == 4
    t4 = t3 + timedelta(minutes=120 + 5, seconds=1)              # nothing reported: unknown after 5 min
    await tick(runner, t4)
    assert await outcomes(runner, "retry", "c005") == ["busy", "no_answer", "machine", "unknown"]
    assert (await contact(runner, "retry", "c005")).status.value == "exhausted"
    await tick(runner, t4 + timedelta(days=1))
    assert len(carrier.placed) == 4 and (await runner.parts.campaign_admin.status("retry"))["state"] == "done"


async def test_sms_first_then_a_call_when_unanswered_and_reached(gw):
    core, runner, carrier = gw
    await make(runner, "remind", customers("C005", "C001"), escalate_after_minutes=30)
    await tick(runner, T0)
    sms = runner.parts.outbox.messages(to=EMMA)
    assert len(sms) == 1 and "device pickup" in sms[0].body and sms[0].body.endswith("Reply STOP to opt out.")
    assert carrier.placed == []
    await runner.parts.sms_inbound.receive(ALICE, "yes")        # Alice answers the SMS
    await tick(runner, T0 + timedelta(minutes=29))
    assert carrier.placed == []
    await tick(runner, T0 + timedelta(minutes=30))               # Emma did not: the call follows at once
    assert carrier.numbers() == [EMMA]
    assert carrier.placed[0].conversation_id == sms[0].conversation_id  # the same conversation goes on
    opened = await carrier.answer(EMMA, say="yes", hang_up=False)
    assert opened.actions[0].text.startswith("Hello, this is an automated call from Example Services.")
    await tick(runner, T0 + timedelta(minutes=31))
    assert await outcomes(runner, "remind", "c005") == ["no_reply", "calling"]  # in progress until it ends
    await core.handle(carrier.placed[0].conversation_id, ChannelClosed(reason="hangup"), session_id=opened.session_id)
    await tick(runner, T0 + timedelta(minutes=32))
    assert await outcomes(runner, "remind", "c005") == ["no_reply", "answered"]
    assert await outcomes(runner, "remind", "c001") == ["replied"]
    status = await runner.parts.campaign_admin.status("remind")
    assert status["contacts"] == {"reached": 2} and status["state"] == "done"


async def test_opt_out_by_sms_during_a_campaign(gw):
    core, runner, carrier = gw
    await make(runner, "stop", customers("C005"), escalate_after_minutes=30)
    await tick(runner, T0)
    replies = await runner.parts.sms_inbound.receive(EMMA, "STOP")
    assert replies == ["You're unsubscribed: Example Services will not call or text you again."]
    await tick(runner, T0 + timedelta(minutes=30))
    assert carrier.placed == []
    assert await outcomes(runner, "stop", "c005") == ["opted_out"]
    assert (await contact(runner, "stop", "c005")).status.value == "opted_out"


async def test_opt_out_by_voice_on_a_campaign_call(gw):
    core, runner, carrier = gw
    await make(runner, "voice-stop", customers("C002"), sms_first=False)
    await tick(runner, T0)
    await carrier.answer(BOB, say="please stop calling me")
    await tick(runner, T0 + timedelta(minutes=1))
    assert await outcomes(runner, "voice-stop", "c002") == ["opted_out"]
    assert await core.engine.services.policy.dnc.contains(BOB)


async def test_a_contact_without_a_customer_is_never_called(gw):
    core, runner, carrier = gw
    await make(runner, "nobody", csv_of([{"id": "x", "phone": "+15550001234"}]), sms_first=False)
    await tick(runner, T0)
    assert carrier.placed == []  # the core calls numbers on file only
    assert await outcomes(runner, "nobody", "x") == ["refused"]
    assert (await contact(runner, "nobody", "x")).status.value == "failed"


async def test_pause_starts_nothing_new_and_settles_calls_in_progress(gw):
    core, runner, carrier = gw
    await make(runner, "hold", customers("C001", "C002"), sms_first=False, calls_per_minute=1)
    await tick(runner, T0)
    await runner.parts.campaign_admin.pause("hold")
    await carrier.fail(ALICE, "congestion")
    await tick(runner, T0 + timedelta(minutes=5))
    assert carrier.numbers() == [ALICE]
    assert await outcomes(runner, "hold", "c001") == ["congestion"]
    await runner.parts.campaign_admin.start("hold")
    await tick(runner, T0 + timedelta(minutes=6))
    assert carrier.numbers() == [ALICE, BOB]


async def test_a_contact_without_a_customer_gets_the_lists_words(gw):
    core, runner, carrier = gw
    await make(runner, "flu", csv_of([{"id": "x", "phone": "+15550001234", "text": "Your flu shot is due."}]))
    await tick(runner, T0)
    body = runner.parts.outbox.messages(to="+15550001234")[0].body
    assert body.startswith("Example Services (automated message): Your flu shot is due. Reply YES")
    assert "account number" not in body
