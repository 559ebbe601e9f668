"""A long queue before a transfer, through the real core (SQLite store, scheduled callbacks,
sample CRM): the customer is offered a callback at a time they pick, a text, or the wait; a
booked callback is placed when due, and the answered call goes straight to the agents."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.actions import Ask, Originate, Say, ScreenPop, SendFollowUp, Transfer
from gateway.core.events import CallStarted, ChatMessage, ChatStarted
from gateway.core.queue_wait import WaitEstimate
from gateway.digital.booked_callbacks import BookedCallbacks

ALICE = "+15551234567"


@pytest.fixture
async def core(tmp_path):
    core = await build_core(load_settings(environ={}, overrides={"data_dir": str(tmp_path)}))
    core.placed = []  # type: ignore[attr-defined]
    core.waits = {}  # type: ignore[attr-defined]

    async def telephony(cid, action):
        core.placed.append(action)

    async def queue(queue_name, family):
        """What the desktop's or Asterisk's probe would answer (tests of those read real queues)."""
        seconds = core.waits.get(queue_name)
        return None if seconds is None else WaitEstimate(queue_name, seconds, waiting=3, source="test")

    core.register_sink(Originate, telephony)
    core.register_queue_probe(queue)
    yield core
    await core.close()


def texts(actions) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))


async def _verified_alice_asking_for_an_agent(core):
    opened = await core.open("chat", event=ChatStarted())
    say = lambda text: core.handle(opened.conversation_id, ChatMessage(text), session_id=opened.session_id)  # noqa: E731
    await say("there's a wrong charge on my bill")
    await say("12345678")
    await say("4321")
    return opened, say, await say("I want to talk to a person")


async def test_a_long_wait_offers_a_callback_that_is_placed_when_due(core):
    core.waits["billing"] = 600.0
    opened, say, acts = await _verified_alice_asking_for_an_agent(core)
    assert not any(isinstance(a, Transfer) for a in acts)
    assert "about 10 minutes" in texts(acts) and "call back" in texts(acts)
    acts = await say("a callback please")
    assert "When should we call you" in texts(acts)
    before = dt.datetime.now().astimezone()
    acts = await say("in an hour")
    after = dt.datetime.now().astimezone()
    # an hour from now is said as today's time, or as the next day's within the last hour before midnight
    said = {"we'll call you today at" if (t + dt.timedelta(hours=1)).date() == t.date() else "we'll call you on "
            for t in (before, after)}
    assert any(s in texts(acts) for s in said) and "ending in 4567" in texts(acts), texts(acts)
    booked = await core.scheduled_callbacks.get(opened.conversation_id)
    assert booked is not None and booked.queue == "billing" and 3500 < booked.due_at - dt.datetime.now().timestamp() < 3700
    poller = BookedCallbacks(core, core.scheduled_callbacks, poll_seconds=30)
    assert await poller.run_once(booked.due_at - 60) == 0  # not yet
    assert await poller.run_once(booked.due_at + 1) == 1 and await poller.run_once(booked.due_at + 2) == 0
    placed = core.placed[-1]
    assert placed.number == ALICE and placed.callback
    call = await core.open("voice", conversation_id=opened.conversation_id, callback=placed.callback,
                           event=CallStarted(caller_id=ALICE, outbound=True))
    assert "the call back you asked for" in texts(call.actions)
    transfer = [a for a in call.actions if isinstance(a, Transfer)]
    assert transfer and transfer[0].queue == "billing"
    assert any(isinstance(a, ScreenPop) for a in call.actions)  # the agent sees everything


async def test_choosing_to_wait_transfers_to_the_queue_after_all(core):
    core.waits["billing"] = 900.0
    opened, say, acts = await _verified_alice_asking_for_an_agent(core)
    assert "about 15 minutes" in texts(acts)
    acts = await say("I'll wait")
    transfer = [a for a in acts if isinstance(a, Transfer)]
    assert transfer and transfer[0].queue == "billing" and "keep you in the queue" in texts(acts)


async def test_a_text_to_continue_later_goes_to_the_phone_on_file(core):
    core.waits["billing"] = 900.0
    opened, say, acts = await _verified_alice_asking_for_an_agent(core)
    acts = await say("just text me")
    sms = [a for a in acts if isinstance(a, SendFollowUp)]
    assert sms and sms[0].to == ALICE and sms[0].link_purpose == "chat"
    assert not any(isinstance(a, Transfer) for a in acts)


async def test_a_short_queue_or_no_phone_on_file_transfers_at_once(core):
    core.waits["billing"] = 30.0
    _, _, acts = await _verified_alice_asking_for_an_agent(core)
    assert any(isinstance(a, Transfer) for a in acts)
    core.waits["support"] = 900.0
    stranger = await core.open("chat", event=ChatStarted())
    acts = await core.handle(stranger.conversation_id, ChatMessage("let me talk to a person"),
                             session_id=stranger.session_id)
    assert any(isinstance(a, Transfer) for a in acts)  # nobody to call back: the queue it is


async def test_a_failing_probe_costs_only_the_offer(core):
    async def broken(queue_name, family):
        raise RuntimeError("queue state unavailable")

    core.register_queue_probe(broken)
    _, _, acts = await _verified_alice_asking_for_an_agent(core)
    assert any(isinstance(a, Transfer) for a in acts)


async def test_a_caller_on_the_phone_books_a_callback_by_voice(core):
    from gateway.core.events import DtmfPressed, UserSaid

    core.waits["billing"] = 400.0
    call = await core.open("voice", caller_id="anonymous", event=CallStarted(caller_id="anonymous"))
    hear = lambda text: core.handle(call.conversation_id, UserSaid(text, confidence=0.9),  # noqa: E731
                                    session_id=call.session_id)
    await hear("there's a wrong charge on my bill")
    for digit in "12345678" + "4321":
        await core.handle(call.conversation_id, DtmfPressed(digit), session_id=call.session_id)
    acts = await hear("let me speak to a person")
    assert "about 7 minutes" in texts(acts) and "Say call back, or wait" in texts(acts)
    acts = await hear("call back")
    assert "When should we call you" in texts(acts)
    acts = await hear("tomorrow morning")
    assert "We'll call you on" in texts(acts) and "9 AM" in texts(acts)
