"""Every journey through the real core: real SQLite context store, real sample CRM, real NLU."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.context import StoreError
from gateway.core.actions import Ask, Hangup, OfferCall, Originate, Say, ScreenPop, SendFollowUp, Transfer
from gateway.core.events import (CallAccepted, CallStarted, ChatMessage, ChatStarted, DtmfPressed, Silence,
                                 UserSaid)
from gateway.core.orchestrator import UnknownConversation
from gateway.integrations.sample_crm import SampleCrm

ALICE_PHONE = "+15551234567"


def settings_for(tmp_path: Path, **overrides):
    return load_settings(environ={}, overrides={"data_dir": str(tmp_path), **overrides})


async def _telephony(conversation_id, action):
    """A telephony channel is there to carry out Originate (the core offers calls only then)."""


@pytest.fixture
async def core(tmp_path):
    core = await build_core(settings_for(tmp_path))
    core.register_sink(Originate, _telephony)
    yield core
    await core.store.close()


def texts(actions) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))


def last_ask(actions) -> Ask:
    asks = [a for a in actions if isinstance(a, Ask)]
    assert asks, f"expected a question, got {actions}"
    return asks[-1]


async def chat(core, opened, text):
    """A chat message in the session ``opened`` (what it proved is bound to that session)."""
    return await core.handle(opened.conversation_id, ChatMessage(text), session_id=opened.session_id)


async def voice(core, opened, text):
    return await core.handle(opened.conversation_id, UserSaid(text, confidence=0.9), session_id=opened.session_id)


async def keys(core, opened, digits):
    actions = []
    for digit in digits:
        actions += await core.handle(opened.conversation_id, DtmfPressed(digit), session_id=opened.session_id)
    return actions


async def test_order_status_for_an_unknown_chat_customer(core):
    opened = await core.open("chat", event=ChatStarted())
    assert "How can I help" in texts(opened.actions)
    acts = await chat(core, opened, "where's my package? it hasn't arrived yet")
    assert last_ask(acts).expect.kind == "digits"
    acts = await chat(core, opened, "it's 2 0 0 0 1")
    assert "standing desk" in texts(acts) and "delayed" in texts(acts)
    acts = await chat(core, opened, "yes please")
    follow = [a for a in acts if isinstance(a, SendFollowUp)]
    assert follow and follow[0].channel == "chat" and follow[0].link_purpose == "track_order"
    acts = await chat(core, opened, "no that's all")
    assert any(isinstance(a, Hangup) for a in acts)


async def test_order_status_by_voice_greets_the_claimed_caller_but_asks_the_order_number(core):
    # a caller ID is a claim: the caller is greeted by name, but Alice's orders are not read out
    opened = await core.open("voice", caller_id=ALICE_PHONE, event=CallStarted(caller_id=ALICE_PHONE))
    assert "Hello Alice" in texts(opened.actions)
    acts = await voice(core, opened, "I want to know where my order is")
    assert "headphones" not in texts(acts) and last_ask(acts).expect.kind == "digits"
    acts = await keys(core, opened, "10001#")
    assert "headphones" in texts(acts) and "1 0 0 0 1" in texts(acts)
    acts = await voice(core, opened, "yeah")
    sms = [a for a in acts if isinstance(a, SendFollowUp)]
    assert sms and sms[0].channel == "sms" and sms[0].to == ALICE_PHONE  # the phone on file only


async def test_billing_dispute_with_verification_by_dtmf_and_spoken_birthday(core):
    opened = await core.open("voice", caller_id="anonymous", event=CallStarted(caller_id="anonymous"))
    cid = opened.conversation_id
    acts = await voice(core, opened, "there's a wrong charge on my bill")
    assert last_ask(acts).expect.kind == "digits" and "account number" in texts(acts)
    acts = await keys(core, opened, "12345678")
    assert "date of birth" in texts(acts)
    acts = await voice(core, opened, "march fourteenth nineteen eighty five")
    assert "you're verified" in texts(acts) and "79.97" not in texts(acts)
    assert "What seems to be wrong" in texts(acts)
    acts = await voice(core, opened, "the sports package was charged twice")
    assert "Premium sports package" in texts(acts)
    acts = await voice(core, opened, "yes do it")
    assert "dispute case" in texts(acts)
    assert any(isinstance(a, SendFollowUp) and a.template == "dispute_opened" for a in acts)
    context = await core.context(cid)
    assert "identity" in context["verified"] and context["slots"]["case_id"]


async def test_frustrated_billing_customer_is_offered_a_human(core):
    opened = await core.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    await chat(core, opened, "I have a problem with my bill")
    await chat(core, opened, "87654321")
    acts = await chat(core, opened, "1234")
    assert "What seems to be wrong" in texts(acts)
    acts = await chat(core, opened, "This is ridiculous!!! Third time I call about this useless bill")
    assert "specialist" in texts(acts) and last_ask(acts).expect.kind == "yesno"
    acts = await chat(core, opened, "yes")
    transfer = [a for a in acts if isinstance(a, Transfer)]
    assert transfer and transfer[0].queue == "billing" and "billing" in transfer[0].skills
    pop = [a for a in acts if isinstance(a, ScreenPop)][0]
    assert pop.context["verified"] and pop.context["frustration"] >= 0.5
    assert any("frustrated" in s for s in pop.context["suggested_next_steps"])


async def test_password_reset_sends_link(core):
    opened = await core.open("voice", event=CallStarted(caller_id="+15550000000"))
    cid = opened.conversation_id
    await voice(core, opened, "I forgot my password")
    await voice(core, opened, "five five six six seven seven eight eight")
    acts = await keys(core, opened, "9753")
    follow = [a for a in acts if isinstance(a, SendFollowUp)]
    assert follow and follow[0].link_purpose == "reset_password" and follow[0].to == "+15554445555"
    assert "ending in 5555" in texts(acts)


async def test_resume_loan_application_from_a_second_channel_steps_the_caller_up(core):
    opened = await core.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    await chat(core, opened, "I started a loan application and got stuck")
    await chat(core, opened, "my account number is 11223344")
    acts = await chat(core, opened, "30/11/1978")
    assert "proof of income" in texts(acts) and last_ask(acts).expect.kind == "yesno"
    # the customer now phones in: found by caller id (a claim), so the journey's place follows
    # but the verification does not: a short PIN/birth date check, no account number
    call = await core.open("voice", caller_id="+15552223333", event=CallStarted(caller_id="+15552223333"))
    assert call.resumed and call.conversation_id == cid
    spoken = texts(call.actions)
    assert "Welcome back, Carmen" in spoken and "already verified" not in spoken
    assert "proof of income" not in spoken and "account number" not in spoken
    assert last_ask(call.actions).prompt_id == "choose"
    acts = await voice(core, call, "PIN please")
    assert last_ask(acts).prompt_id == "ask_secret"
    acts = await keys(core, call, "2468")
    spoken = texts(acts)
    assert "you're verified" in spoken and last_ask(acts).prompt_id == "offer_link" and "text message" in spoken
    acts = await voice(core, call, "yes please")
    assert any(isinstance(a, SendFollowUp) and a.link_purpose == "upload_document" for a in acts)
    context = await core.context(cid)
    assert context["channels"] == ["chat", "voice"]
    assert {line["channel"] for line in context["transcript"]} >= {"chat", "voice", "bot"}


async def test_restart_in_the_middle_of_a_journey_loses_nothing(tmp_path):
    settings = settings_for(tmp_path)
    first = await build_core(settings)
    opened = await first.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    await chat(first, opened, "I need help with my appointment")
    await chat(first, opened, "12345678")
    await first.store.close()
    second = await build_core(settings)
    acts = await chat(second, opened, "4321")
    assert "verified" in texts(acts) and "technician visit" in texts(acts)
    events = await second.store.events(cid)
    assert [e.kind for e in events].count("ChatMessage") == 3
    await second.store.close()


async def test_three_failed_verifications_end_in_an_agent_handoff(core):
    opened = await core.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    await chat(core, opened, "reset my password please")
    for attempt in range(3):
        await chat(core, opened, "12345678")
        acts = await chat(core, opened, "0000")
        if attempt < 2:
            assert "doesn't match" in texts(acts)
    transfer = [a for a in acts if isinstance(a, Transfer)]
    assert transfer and transfer[0].queue == "security" and "verification failed" in transfer[0].reason
    pop = [a for a in acts if isinstance(a, ScreenPop)][0].context
    assert not pop["verified"]
    assert any("security procedure" in s for s in pop["suggested_next_steps"])
    record = await core.store.get(cid)
    assert record.status == "transferred" and "secret" not in record.slots


async def test_global_intents_in_the_middle_of_slot_filling(core):
    opened = await core.open("voice", event=CallStarted(caller_id="+15550000001"))
    cid = opened.conversation_id
    acts = await voice(core, opened, "I'd like to reschedule my appointment")
    question = last_ask(acts).text
    acts = await voice(core, opened, "sorry can you repeat that")
    assert last_ask(acts).text == question
    acts = await voice(core, opened, "one two three four five six seven eight")
    assert "date of birth" in texts(acts)
    acts = await voice(core, opened, "go back")
    assert last_ask(acts).prompt_id == "ask_account"
    acts = await voice(core, opened, "just let me talk to a real person")
    transfer = [a for a in acts if isinstance(a, Transfer)]
    assert transfer and transfer[0].reason == "customer asked for an agent"
    assert any(isinstance(a, ScreenPop) for a in acts)


async def test_no_input_retries_then_escalates(core):
    opened = await core.open("voice", event=CallStarted(caller_id="+15550000002"))
    cid = opened.conversation_id
    acts = await core.handle(cid, Silence(6.0))
    assert "still there" in texts(acts) and last_ask(acts)
    await core.handle(cid, Silence(6.0))
    acts = await core.handle(cid, Silence(6.0))
    assert any(isinstance(a, Transfer) and "no-input" in a.reason for a in acts)


async def test_no_match_then_understood(core):
    opened = await core.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    acts = await chat(core, opened, "purple elephants dancing")
    assert "didn't understand" in texts(acts)
    acts = await chat(core, opened, "where is my order")
    assert "order number" in texts(acts)


async def test_outbound_appointment_reminder_reschedules(core):
    # the reminder SMS went unanswered: the gateway calls the number on file, and the call it
    # placed (recognised by its callback nonce) proves the phone, enough for the reminder
    sms = await core.open("sms", customer_id="C002", caller_id="+15559876543", journey="appointment",
                          event=CallStarted(channel="sms", caller_id="+15559876543", outbound=True))
    placed = [a for a in await core.handle(sms.conversation_id, CallAccepted(channel="outreach"))
              if isinstance(a, Originate)]
    assert placed and placed[0].number == "+15559876543" and placed[0].callback
    opened = await core.open("voice", conversation_id=sms.conversation_id, journey="appointment",
                             callback=placed[0].callback,
                             event=CallStarted(caller_id="+15559876543", outbound=True))
    ask = last_ask(opened.actions)
    assert "router installation" in ask.text and ask.expect.kind == "yesno"
    acts = await voice(core, opened, "no I can't make it")
    assert last_ask(acts).expect.kind == "date"
    target = date.today() + timedelta(days=7)
    acts = await voice(core, opened, f"{target.strftime('%B')} {target.day}")
    assert "now on" in texts(acts) and target.strftime("%B") in texts(acts)
    assert any(isinstance(a, SendFollowUp) and a.template == "appointment_rescheduled" for a in acts)


async def test_chat_to_voice_pivot_continues_verified(core):
    opened = await core.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    await chat(core, opened, "problem with my bill")
    await chat(core, opened, "12345678")
    await chat(core, opened, "4321")
    acts = await chat(core, opened, "actually can you call me instead")
    offer = [a for a in acts if isinstance(a, OfferCall)]
    assert offer and offer[0].number == ALICE_PHONE
    acts = await core.handle(cid, CallAccepted(channel="chat"), session_id=opened.session_id)
    originate = [a for a in acts if isinstance(a, Originate)]
    assert originate and originate[0].conversation_id == cid and originate[0].number == ALICE_PHONE
    call = await core.open("voice", conversation_id=cid, callback=originate[0].callback,
                           event=CallStarted(caller_id=ALICE_PHONE, outbound=True))
    assert call.resumed and "already verified" in texts(call.actions)
    assert last_ask(call.actions).prompt_id == "ask_problem"
    # the same callback nonce a second time (a replay) proves nothing
    again = await core.open("voice", conversation_id=cid, callback=originate[0].callback,
                            event=CallStarted(caller_id=ALICE_PHONE, outbound=True))
    assert "already verified" not in texts(again.actions) and "What seems to be wrong" not in texts(again.actions)


async def test_sinks_receive_actions_of_other_channels(core):
    seen = []

    async def sms_sink(conversation_id, action):
        seen.append((conversation_id, action))

    core.register_sink(SendFollowUp, sms_sink)
    opened = await core.open("voice", caller_id=ALICE_PHONE, event=CallStarted(caller_id=ALICE_PHONE))
    await voice(core, opened, "where's my order")
    await keys(core, opened, "10001#")
    await voice(core, opened, "sure")
    assert seen and seen[0][0] == opened.conversation_id and seen[0][1].template == "order_tracking"


async def test_a_failing_sink_does_not_fail_the_conversation(core):
    async def broken(conversation_id, action):
        raise RuntimeError("sms gateway down")

    core.register_sink(SendFollowUp, broken)
    opened = await core.open("voice", caller_id=ALICE_PHONE, event=CallStarted(caller_id=ALICE_PHONE))
    await voice(core, opened, "where's my order")
    await keys(core, opened, "10001#")
    acts = await voice(core, opened, "yes")
    assert "anything else" in texts(acts)


async def test_pin_never_reaches_the_database_file(tmp_path):
    core = await build_core(settings_for(tmp_path))
    opened = await core.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    await chat(core, opened, "reset my password")
    await chat(core, opened, "12345678")
    await chat(core, opened, "my pin is 4321")
    await chat(core, opened, "my card is 4111 1111 1111 1111 by the way")
    await core.store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("conversations.db*"))
    assert b"4321" not in raw
    assert b"4111 1111 1111 1111" not in raw and b"4111111111111111" not in raw


async def test_unknown_conversation_is_a_clear_error(core):
    with pytest.raises(UnknownConversation):
        await core.handle("no-such-conversation", ChatMessage("hello"))


async def test_corrupt_database_fails_at_start_with_the_path(tmp_path):
    (tmp_path / "conversations.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as err:
        await build_core(settings_for(tmp_path))
    assert "conversations.db" in str(err.value)


async def test_locked_database_is_a_clear_error_and_loses_nothing(tmp_path):
    core = await build_core(settings_for(tmp_path, context={"busy_timeout_ms": 200}))
    opened = await core.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    blocker = sqlite3.connect(tmp_path / "conversations.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreError):
        await chat(core, opened, "where is my order")
    blocker.execute("ROLLBACK")
    blocker.close()
    acts = await chat(core, opened, "where is my order")
    assert "order number" in texts(acts)
    kinds = [e.kind for e in await core.store.events(cid)]
    assert kinds.count("ChatMessage") >= 1 and kinds[-1] == "Ask"
    await core.store.close()


async def test_crm_timeout_apologizes_and_offers_an_agent(tmp_path):
    settings = settings_for(tmp_path, crm={"timeout_seconds": 0.2})
    crm = SampleCrm(settings.data_path(settings.crm.sqlite_path), timeout_seconds=0.2, delay_seconds=0.5)
    core = await build_core(settings, crm=crm)
    opened = await core.open("chat", event=ChatStarted())
    cid = opened.conversation_id
    await chat(core, opened, "I was overcharged on my bill")
    await chat(core, opened, "12345678")
    acts = await chat(core, opened, "4321")
    assert "not responding" in texts(acts) or "sorry" in texts(acts).lower()
    assert any(isinstance(a, Transfer) for a in acts)
    await core.store.close()
