"""The human side in the real conversation core (SQLite in tmp_path, the real journeys): waiting
for an agent, the agent's messages, hand-back, disposition, steering, take-over, and what a
staff event may never do (answer for the customer, prove anything for their session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.app import build_core
from gateway.core.actions import AgentJoined, AgentLeft, AgentSay, Ask, Hangup, Say, SendFollowUp, StaffNotice, Transfer
from gateway.core.events import (AgentConnected, AgentDropped, AgentFollowUp, AgentMessage, ChatMessage, ChatStarted,
                                 Disposition, HandBack, QueueChoice, Steer, TakeOver)
from gateway.core.orchestrator import Orchestrator
from tests.digital.helpers import web_settings


@pytest.fixture
async def core(tmp_path: Path) -> Any:
    core = await build_core(web_settings(tmp_path))
    yield core
    await core.close()


async def chat(core: Orchestrator, *texts: str) -> tuple[str, str]:
    opened = await core.open("chat", event=ChatStarted())
    for text in texts:
        await core.handle(opened.conversation_id, ChatMessage(text=text), session_id=opened.session_id)
    return opened.conversation_id, opened.session_id


def kinds(actions: list[Any]) -> list[str]:
    return [a.kind for a in actions]


async def test_a_waiting_chat_is_quiet_and_an_agent_takes_it(core):
    cid, sid = await chat(core, "where is my order", "I want to talk to an agent")
    ctx = await core.context(cid)
    assert ctx["status"] == "transferred" and ctx["handoff"]["waiting"]
    # while waiting, what the customer types is kept for the agent; the bot does not answer
    assert await core.handle(cid, ChatMessage(text="are you there?"), session_id=sid) == []
    assert await core.handle(cid, QueueChoice(choice="message"), session_id=sid) == [
        Say("Of course: type your message here and an agent will answer it as soon as they can. You can close "
            "this window; we'll keep everything.")]
    joined = await core.handle(cid, AgentConnected(agent_id="bob", name="Bob"))
    assert joined == [AgentJoined(agent_id="bob", name="Bob")]
    said = await core.handle(cid, AgentMessage(agent_id="bob", text="Hi, Bob here.", message_id="d-1"))
    assert said == [AgentSay(agent_id="bob", name="Bob", text="Hi, Bob here.", message_id="d-1")]
    # sent again after a reconnect: kept once
    assert await core.handle(cid, AgentMessage(agent_id="bob", text="Hi, Bob here.", message_id="d-1")) == []
    assert await core.handle(cid, ChatMessage(text="my order is late", message_id="c-7"), session_id=sid) == []
    assert await core.handle(cid, ChatMessage(text="my order is late", message_id="c-7"), session_id=sid) == []
    lines = [(line["who"], line["text"]) for line in (await core.context(cid))["transcript"]]
    assert ("customer", "are you there?") in lines and lines.count(("customer", "my order is late")) == 1
    assert lines.count(("agent", "Hi, Bob here.")) == 1 and ("system", "Bob joined") in lines
    # reopening the chat (a reload): the bot stays out of it
    reopened = await core.open("chat", conversation_id=cid, session_id=sid)
    assert reopened.actions == []
    assert (await core.context(cid))["status"] == "transferred"


async def test_hand_back_goes_on_at_the_chosen_step_and_the_disposition_closes(core):
    cid, sid = await chat(core, "where is my order", "I want to talk to an agent")
    await core.handle(cid, AgentConnected(agent_id="bob", name="Bob"))
    back = await core.handle(cid, HandBack(agent_id="bob", journey="order_status", step="ask_order"))
    assert back[0] == AgentLeft(name="Bob", reason="handed_back")
    assert isinstance(back[1], Ask) and back[1].text == "What is your order number?"  # the chat's wording
    answer = await core.handle(cid, ChatMessage(text="12345"), session_id=sid)
    assert "couldn't find an order" in answer[0].text  # the bot answers the customer again
    refused = await core.handle(cid, HandBack(agent_id="bob", journey="order_status", step="nope"))
    assert refused == [StaffNotice(text="Not done: no step nope in journey order_status.")]
    await core.handle(cid, AgentConnected(agent_id="bob", name="Bob"))
    closed = await core.handle(cid, Disposition(agent_id="bob", code="resolved", notes="tracking sent"))
    assert closed == [AgentLeft(name="Bob", reason="closed"), Hangup(reason="closed by agent")]
    ctx = await core.context(cid)
    assert ctx["status"] == "closed"
    assert [(c["code"], c["notes"], c["agent"]) for c in ctx["handoff"]["closings"]] == [
        ("resolved", "tracking sent", "bob")]


async def test_staff_words_never_answer_for_the_customer_nor_prove_anything(core):
    """An agent types the account number and the date of birth into the conversation: nothing is
    verified, and the customer's own session is still asked to prove itself after the hand-back."""
    cid, sid = await chat(core, "I want to talk to an agent")
    await core.handle(cid, AgentConnected(agent_id="alice", name="Alice"))
    for text in ("12345678", "1985-03-14", "I want to dispute my bill"):
        out = await core.handle(cid, AgentMessage(agent_id="alice", text=text))
        assert kinds(out) == ["AgentSay"]
    ctx = await core.context(cid)
    assert ctx["verified"] == {} and ctx["assurance"]["sessions"] == [] and ctx["customer"]["id"] == ""
    # handed back into a journey that needs identity: the customer's session is checked first
    back = await core.handle(cid, HandBack(agent_id="alice", journey="billing_dispute"))
    assert any(isinstance(a, Ask) and "account number" in a.text for a in back)
    assert (await core.context(cid))["journey"] == "verify_identity"
    # another agent (or one who no longer holds it) cannot type into it
    out = await core.handle(cid, AgentMessage(agent_id="bob", text="hello"))
    assert kinds(out) == ["StaffNotice"]


async def test_a_verified_session_keeps_its_proof_through_an_agent(core):
    cid, sid = await chat(core, "I want to dispute my bill", "12345678", "1985-03-14")
    assert "identity" in (await core.context(cid))["verified"]
    await core.handle(cid, ChatMessage(text="I want to talk to an agent"), session_id=sid)
    await core.handle(cid, AgentConnected(agent_id="alice", name="Alice"))
    back = await core.handle(cid, HandBack(agent_id="alice", journey="billing_dispute"))
    assert not any(isinstance(a, Ask) and "account number" in a.text for a in back)
    assert (await core.context(cid))["journey"] == "billing_dispute"


async def test_agent_follow_ups_go_to_the_phone_on_file_or_into_the_chat(core):
    cid, sid = await chat(core, "I want to dispute my bill", "12345678", "1985-03-14", "I want to talk to an agent")
    await core.handle(cid, AgentConnected(agent_id="alice", name="Alice"))
    sms = await core.handle(cid, AgentFollowUp(agent_id="alice", via="sms", purpose="upload_document"))
    assert isinstance(sms[0], SendFollowUp) and sms[0].channel == "sms" and sms[0].to == "+15551234567"
    link = await core.handle(cid, AgentFollowUp(agent_id="alice", via="link", purpose="track_order"))
    assert isinstance(link[0], SendFollowUp) and link[0].channel == "chat" and link[0].to == ""
    # a secret link (an upload) never goes into a chat
    secret = await core.handle(cid, AgentFollowUp(agent_id="alice", via="link", purpose="upload_document"))
    assert kinds(secret) == ["StaffNotice"] and "phone on file only" in secret[0].text


async def test_steering_and_take_over(core):
    cid, sid = await chat(core, "where is my order")
    out = await core.handle(cid, Steer(supervisor="sam", instruction="offer_agent"))
    assert isinstance(out[0], Say) and "say agent" in out[0].text and isinstance(out[1], Ask)
    assert kinds(await core.handle(cid, Steer(supervisor="sam", instruction="goto", step="nope"))) == ["StaffNotice"]
    out = await core.handle(cid, Steer(supervisor="sam", instruction="goto", step="ask_order"))
    assert isinstance(out[0], Ask) and "order number" in out[0].text
    taken = await core.handle(cid, TakeOver(supervisor="sam", agent="bob"))
    transfer = next(a for a in taken if isinstance(a, Transfer))
    assert transfer.agent == "bob" and transfer.queue == "orders" and "sam" in transfer.reason
    assert AgentJoined(agent_id="bob", name="bob") in taken and kinds(taken)[-1] == "ScreenPop"
    # the bot is not steered while people have the conversation
    assert kinds(await core.handle(cid, Steer(supervisor="sam", instruction="end"))) == ["StaffNotice"]
    await core.handle(cid, AgentDropped(agent_id="bob"))
    assert (await core.context(cid))["handoff"]["waiting"]
    other, _ = await chat(core, "where is my order")
    ended = await core.handle(other, Steer(supervisor="sam", instruction="end"))
    assert isinstance(ended[-1], Hangup) and (await core.context(other))["status"] == "closed"


async def test_observers_see_every_turn_as_logged(core):
    seen: list[list[tuple[int, str]]] = []

    async def observer(record, events):
        seen.append([(e.seq, e.kind) for e in events])

    core.observe(observer)
    cid, sid = await chat(core, "where is my order")
    assert seen[0][0] == (1, "ChatStarted") and seen[1][0] == (4, "ChatMessage")
    assert [kind for _, kind in seen[1]] == ["ChatMessage", "Ask"]


async def test_an_agent_message_to_a_customer_not_in_a_chat_is_refused(core):
    from gateway.core.events import CallStarted, UserSaid

    opened = await core.open("voice", event=CallStarted(caller_id="+15550001111"))
    cid = opened.conversation_id
    await core.handle(cid, UserSaid(text="I want to talk to an agent"), session_id=opened.session_id)
    await core.handle(cid, AgentConnected(agent_id="alice", name="Alice"))
    out = await core.handle(cid, AgentMessage(agent_id="alice", text="hello"))
    assert kinds(out) == ["StaffNotice"] and "on voice" in out[0].text
