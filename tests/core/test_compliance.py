"""Outbound compliance through the real core (SQLite store, sample CRM, NLU, do-not-call list):
calls the gateway places say who calls and that it is automated; a customer opts out by voice,
by key or in a chat, and the opt-out is honoured by every outbound path of the core."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.context import open_audit
from gateway.core.actions import Ask, Hangup, Originate, Say, SendFollowUp
from gateway.core.events import CallAccepted, CallStarted, ChatMessage, ChatStarted, DtmfPressed, OptOut, UserSaid

EMMA, EMMA_ID = "+15556667777", "C005"      # sample CRM: a device pickup reminder
ALICE = "+15551234567"                       # sample CRM: account 12345678, PIN 4321
DAVID = "+15554445555"                       # sample CRM: PIN 9753


def settings_for(tmp_path: Path, **overrides):
    return load_settings(environ={}, overrides={"data_dir": str(tmp_path), **overrides})


@pytest.fixture
async def gateway(tmp_path):
    core = await build_core(settings_for(tmp_path, compliance={"organisation": "Riverside Services"}))
    placed: list[Originate] = []

    async def telephony(cid, action):
        placed.append(action)

    core.register_sink(Originate, telephony)
    yield core, placed
    await core.close()


def texts(actions) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))


async def reminder_call(core, placed):
    """Emma's reminder thread escalated to a call, and the call answered: (opened call, cid)."""
    thread = await core.open("sms", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                             event=CallStarted(channel="sms", caller_id=EMMA, outbound=True))
    cid = thread.conversation_id
    await core.handle(cid, CallAccepted(channel="outreach"))
    assert placed and placed[-1].number == EMMA
    call = await core.open("voice", conversation_id=cid, callback=placed[-1].callback,
                           event=CallStarted(caller_id=EMMA, outbound=True))
    return thread, call, cid


async def audit_actions(tmp_path, cid):
    audit = open_audit(settings_for(tmp_path))
    try:
        return [e.action for e in await audit.entries(conversation_id=cid)]
    finally:
        await audit.close()


async def test_outbound_starts_say_who_calls_and_that_it_is_automated(gateway):
    core, placed = gateway
    thread, call, cid = await reminder_call(core, placed)
    first = thread.actions[0]
    assert isinstance(first, Say) and first.text == "Riverside Services (automated message):"
    assert "device pickup" in texts(thread.actions)
    spoken = texts(call.actions)
    assert spoken.startswith("Hello, this is an automated call from Riverside Services. To stop our calls at any "
                             "time, say stop calling me, or press 9.")
    assert "device pickup" in spoken and isinstance(call.actions[-1], Ask)  # then on where it stood
    inbound = await core.open("voice", event=CallStarted(caller_id="+15550000000"))
    assert "automated call from" not in texts(inbound.actions)  # an inbound caller hears the assistant greeting


async def test_call_first_waits_for_the_answer_then_discloses_and_starts_the_journey(gateway):
    core, placed = gateway
    dialer = await core.open("outreach", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                             event=CallStarted(channel="outreach", caller_id=EMMA, outbound=True))
    assert dialer.actions == []  # nothing is said before someone answers
    await core.handle(dialer.conversation_id, CallAccepted(channel="outreach"))
    call = await core.open("voice", conversation_id=dialer.conversation_id, callback=placed[-1].callback,
                           event=CallStarted(caller_id=EMMA, outbound=True))
    spoken = texts(call.actions)
    assert spoken.startswith("Hello, this is an automated call from Riverside Services")
    assert "device pickup" in spoken and "Will you be able to make it?" in spoken


async def test_opt_out_by_voice_on_a_reminder_call(gateway, tmp_path):
    core, placed = gateway
    _, call, cid = await reminder_call(core, placed)
    acts = await core.handle(cid, UserSaid("please stop calling me"), session_id=call.session_id)
    assert texts(acts) == "Understood. Riverside Services will not call or text you again. Goodbye."
    assert isinstance(acts[-1], Hangup)
    assert await core.engine.services.policy.dnc.contains(EMMA)
    assert "opted_out" in await audit_actions(tmp_path, cid)
    # honoured by the core's own call: no Originate, a refusal noted and audited
    count = len(placed)
    acts = await core.handle(cid, CallAccepted(channel="outreach"))
    assert len(placed) == count and not [a for a in acts if isinstance(a, Originate)]
    events = await core.store.events(cid)
    assert [e.payload["reason"] for e in events if e.kind == "CallRefused"] == ["do_not_call"]
    assert [e.payload["via"] for e in events if e.kind == "OptedOut"] == ["voice"]


async def test_opt_out_by_key_on_a_call_the_gateway_placed(gateway):
    core, placed = gateway
    _, call, cid = await reminder_call(core, placed)
    acts = await core.handle(cid, DtmfPressed("9"), session_id=call.session_id)
    assert isinstance(acts[-1], Hangup) and "will not call or text you again" in texts(acts)
    assert await core.engine.services.policy.dnc.contains(EMMA)
    assert [e.payload["via"] for e in await core.store.events(cid) if e.kind == "OptedOut"] == ["key"]


async def test_the_key_is_a_digit_while_a_digit_string_is_asked_and_on_inbound_calls(gateway):
    core, placed = gateway
    inbound = await core.open("voice", event=CallStarted(caller_id="+15550000000"))
    acts = await core.handle(inbound.conversation_id, DtmfPressed("9"), session_id=inbound.session_id)
    assert not [a for a in acts if isinstance(a, Hangup)]
    # David, called by the gateway: his PIN has a 9 in it
    dnc = core.engine.services.policy.dnc
    thread = await core.open("sms", customer_id="C004", caller_id=DAVID, journey="password_reset",
                             event=CallStarted(channel="sms", caller_id=DAVID, outbound=True))
    await core.handle(thread.conversation_id, CallAccepted(channel="outreach"))
    call = await core.open("voice", conversation_id=thread.conversation_id, callback=placed[-1].callback,
                           event=CallStarted(caller_id=DAVID, outbound=True))
    assert "Say code, or PIN." in texts(call.actions)
    for digit in "29753":  # 2: PIN, then the PIN
        acts = await core.handle(thread.conversation_id, DtmfPressed(digit), session_id=call.session_id)
    assert not await dnc.contains(DAVID)
    assert not [a for a in acts if isinstance(a, Hangup)] and "you're verified" in texts(acts)


async def test_opt_out_in_a_chat_lists_the_verified_customers_phone(gateway):
    core, _ = gateway
    chat = await core.open("chat", event=ChatStarted())
    cid = chat.conversation_id
    acts = await core.handle(cid, ChatMessage("unsubscribe"), session_id=chat.session_id)
    assert "can't tell which number" in texts(acts)  # an anonymous chat names no number
    for text in ("there's a wrong charge on my bill", "12345678", "4321"):
        await core.handle(cid, ChatMessage(text), session_id=chat.session_id)
    acts = await core.handle(cid, ChatMessage("I don't want any more of these reminders"), session_id=chat.session_id)
    assert texts(acts) == "You're unsubscribed: Riverside Services will not call or text you again."
    assert await core.engine.services.policy.dnc.contains(ALICE)


async def test_an_sms_opt_out_before_any_check_and_a_repeat_is_not_answered(gateway):
    core, _ = gateway
    opened = await core.open("sms", caller_id=ALICE, event=ChatStarted(channel="sms"), session_id=f"sms:{ALICE}")
    cid = opened.conversation_id
    await core.handle(cid, ChatMessage("there's a wrong charge on my bill", channel="sms"), session_id=f"sms:{ALICE}")
    acts = await core.handle(cid, OptOut(via="sms", number=ALICE), session_id=f"sms:{ALICE}")
    assert texts(acts) == "You're unsubscribed: Riverside Services will not call or text you again."
    assert await core.handle(cid, OptOut(via="sms", number=ALICE), session_id=f"sms:{ALICE}") == []


async def test_every_outbound_path_refuses_a_listed_number(gateway):
    """Attack: an opted-out customer must not be reached by a callback, an SMS follow-up or a
    one-time code, however the conversation asks (before the list existed, all three went out)."""
    core, placed = gateway
    dnc = core.engine.services.policy.dnc
    await dnc.add(ALICE, source="test")
    await dnc.add(DAVID, source="test")
    # a verified chat asks for a call to the number on file
    chat = await core.open("chat", event=ChatStarted())
    cid = chat.conversation_id
    for text in ("there's a wrong charge on my bill", "12345678", "4321", "can you call me instead"):
        acts = await core.handle(cid, ChatMessage(text), session_id=chat.session_id)
    acts = await core.handle(cid, CallAccepted(channel="chat"), session_id=chat.session_id)
    assert placed == [] and "asked us not to call or text it" in texts(acts)
    # a journey's SMS follow-up (the password reset link) to David's phone on file
    voice = await core.open("voice", event=CallStarted(caller_id="+15550000000"))
    for text in ("I forgot my password", "five five six six seven seven eight eight"):
        await core.handle(voice.conversation_id, UserSaid(text, confidence=0.9), session_id=voice.session_id)
    acts = []
    for digit in "9753":
        acts = await core.handle(voice.conversation_id, DtmfPressed(digit), session_id=voice.session_id)
    assert not [a for a in acts if isinstance(a, SendFollowUp)]
    refused = [e.payload for e in await core.store.events(voice.conversation_id) if e.kind == "FollowUpRefused"]
    assert [p["reason"] for p in refused] == ["do_not_call"]
    # a one-time code to the phone on file (Alice's caller ID resumes her conversation: step-up)
    call = await core.open("voice", caller_id=ALICE, event=CallStarted(caller_id=ALICE))
    assert "Say code, or PIN." in texts(call.actions)
    acts = await core.handle(call.conversation_id, UserSaid("code", confidence=0.9), session_id=call.session_id)
    assert not [a for a in acts if isinstance(a, SendFollowUp)] and "can't send a code" in texts(acts)
