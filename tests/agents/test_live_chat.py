"""The human side over real sockets, through the real core and web server: a customer's chat is
transferred, waits in the queue (told its place), an agent who signs in afterwards is offered it,
accepts, and both sides chat (typing, delivery), the agent sends a follow-up link, hands back to
the bot at a chosen step, and a later agent closes with a disposition. Then the bad cases: an
accept of a conversation someone else took, a dropped desktop, and nothing typed lost."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from gateway.agents import queue as q
from tests.agents.helpers import bearer, jar, real_gateway
from tests.digital.helpers import recv_until

TIMEOUT = 20
FAST = {"agents": {"offer_seconds": 2.0, "reconnect_grace_seconds": 1.5, "dispatch_seconds": 0.2}}


async def customer(http: aiohttp.ClientSession, url: str, since: int = 0) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await http.ws_connect(url + "/chat/ws" + (f"?since={since}" if since else ""))
    session = await recv_until(ws, "session")
    return ws, session["conversation_id"]


async def say(ws: aiohttp.ClientWebSocketResponse, text: str, until: str = "ask", **extra: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    await ws.send_json({"type": "message", "text": text, **extra})
    await recv_until(ws, until, seen)
    return seen


async def agent_desk(http: aiohttp.ClientSession, url: str, name: str,
                     seen: list[dict[str, Any]] | None = None) -> aiohttp.ClientWebSocketResponse:
    """``name``'s desktop, ready; what came before the ready (the queue, what they hold) in ``seen``."""
    ws = await http.ws_connect(f"{url}/agent/ws", headers=bearer(name))
    await recv_until(ws, "welcome", seen)
    await ws.send_json({"type": "ready", "skills": [], "languages": ["en"]})
    await recv_until(ws, "ready", seen)
    return ws


async def recv_all(ws: aiohttp.ClientWebSocketResponse, *kinds: str) -> dict[str, dict[str, Any]]:
    """Frames read until one of each of ``kinds`` arrived, in any order (the first of each kind)."""
    got: dict[str, dict[str, Any]] = {}
    while set(kinds) - set(got):
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        frame = msg.json()
        if frame["type"] in kinds:
            got.setdefault(frame["type"], frame)
    return got


async def frames_until(ws: aiohttp.ClientWebSocketResponse, predicate: Any, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Frames read until one satisfies ``predicate`` (included)."""
    seen: list[dict[str, Any]] = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        frame = msg.json()
        seen.append(frame)
        if predicate(frame):
            return seen


async def test_transfer_queue_late_agent_chat_follow_up_hand_back_and_disposition(tmp_path):
    async with real_gateway(tmp_path, **FAST) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http, aiohttp.ClientSession() as desks:
            chat, cid = await customer(http, runner.url)
            await recv_until(chat, "ask")
            seen = await say(chat, "I want to talk to an agent", until="queue")
            assert any(f["type"] == "transfer" for f in seen)
            place = seen[-1]
            assert place["position"] == 1 and place["choices"] == ["message", "callback"]
            # nobody was signed in at the transfer: alice signs in afterwards and still gets it
            alice = await agent_desk(desks, runner.url, "alice")
            pop = await recv_until(alice, "screen_pop")
            assert pop["conversation_id"] == cid and pop["offer"]["seconds"] == 2.0
            await alice.send_json({"type": "accept", "conversation_id": cid})
            active = await recv_until(alice, "active")
            texts = [line["text"] for line in active["context"]["transcript"]]
            assert "I want to talk to an agent" in texts
            joined = await recv_until(chat, "agent_joined")
            assert joined["name"] == "alice" and joined["seq"] > 0
            # two-way chat with typing and delivery
            await alice.send_json({"type": "typing", "conversation_id": cid})
            assert (await recv_until(chat, "typing"))["name"] == "alice"
            await alice.send_json({"type": "send", "conversation_id": cid, "text": "Hi, I'm Alice. How can I move "
                                   "this forward for you?", "id": "d-1"})
            message = await recv_until(chat, "agent_message")
            assert message["text"].startswith("Hi, I'm Alice") and message["id"] == "d-1"
            receipts = await recv_all(alice, "sent", "delivered")  # delivered may come first
            assert receipts["sent"]["id"] == "d-1" and receipts["delivered"]["id"] == "d-1"
            await chat.send_json({"type": "typing"})
            assert (await recv_until(alice, "typing"))["conversation_id"] == cid
            await chat.send_json({"type": "message", "text": "Where is my parcel?", "id": "c-1"})
            receipts = await recv_all(chat, "accepted", "seen")
            assert receipts["seen"]["id"] == "c-1"
            lines = await recv_until(alice, "lines")
            assert [(l["who"], l["text"]) for l in lines["lines"]] == [("customer", "Where is my parcel?")]
            # a follow-up link into the chat, then back to the bot at the order question
            await alice.send_json({"type": "follow_up", "conversation_id": cid, "via": "link", "purpose": "track_order"})
            follow = await recv_until(chat, "followup")
            assert "/l/" in follow["url"]
            assert "customer's chat" in (await recv_until(alice, "notice"))["text"]
            await alice.send_json({"type": "hand_back", "conversation_id": cid, "journey": "order_status",
                                   "step": "ask_order"})
            left = await recv_until(chat, "agent_left")
            assert left["reason"] == "handed_back" and "assistant" in left["text"]
            ask = await recv_until(chat, "ask")
            assert ask["text"] == "What is your order number?" and ask["seq"] > message["seq"]
            assert (await recv_until(alice, "released"))["reason"] == "handed_back"
            assert await runner.parts.human.queue.get(cid) is None
            seen = await say(chat, "12345")  # the bot answers the customer again
            assert any("couldn't find an order" in f.get("text", "") for f in seen)
            # a second transfer, from the order journey now: bob (orders) takes it, sees everything
            # alice and the customer wrote, and closes it with a disposition and notes
            await say(chat, "I want to talk to an agent", until="queue")
            bob = await agent_desk(desks, runner.url, "bob")
            await recv_until(bob, "screen_pop")
            await bob.send_json({"type": "accept", "conversation_id": cid})
            context = (await recv_until(bob, "active"))["context"]
            lines = [(l["who"], l["text"]) for l in context["transcript"]]
            assert ("customer", "Where is my parcel?") in lines and ("agent", message["text"]) in lines
            await bob.send_json({"type": "close", "conversation_id": cid, "code": "nonsense"})
            assert "must be one of" in (await recv_until(bob, "refused"))["message"]
            await bob.send_json({"type": "close", "conversation_id": cid, "code": "resolved",
                                 "notes": "tracking link sent; parcel late"})
            assert (await recv_until(chat, "agent_left"))["reason"] == "closed"
            await recv_until(chat, "hangup")
            assert (await recv_until(bob, "released"))["reason"] == "closed"
            await bob.close()
            ctx = await core.context(cid)
            assert ctx["status"] == "closed"
            assert ctx["handoff"]["closings"][-1]["code"] == "resolved"
            assert "parcel late" in ctx["handoff"]["closings"][-1]["notes"]
            await chat.close()
            await alice.close()
        actions = [(e.actor, e.action) for e in await runner.parts.audit.entries(conversation_id=cid)]
        for expected in (("alice", "accepted"), ("alice", "follow_up"), ("alice", "handed_back"),
                         ("bob", "accepted"), ("bob", "closed"), ("system", "assigned")):
            assert expected in actions


async def test_accepting_what_someone_else_took_gets_a_clear_answer(tmp_path):
    async with real_gateway(tmp_path, **FAST) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http, aiohttp.ClientSession() as desks:
            chat, cid = await customer(http, runner.url)
            await recv_until(chat, "ask")
            await say(chat, "I want to talk to an agent", until="queue")
            alice = await agent_desk(desks, runner.url, "alice")
            sam = await agent_desk(desks, runner.url, "sam")  # a supervisor may take any queue
            await asyncio.gather(alice.send_json({"type": "accept", "conversation_id": cid}),
                                 sam.send_json({"type": "accept", "conversation_id": cid}))
            results = {}
            for name, ws in (("alice", alice), ("sam", sam)):
                frames = await frames_until(ws, lambda f: f["type"] in ("active", "refused"))
                results[name] = frames[-1]
            winner = next(n for n, f in results.items() if f["type"] == "active")
            loser = next(n for n, f in results.items() if f["type"] == "refused")
            refusal = results[loser]
            assert refusal["code"] == "taken" and refusal["holder"] == winner
            assert refusal["message"].startswith(f"{winner} already took this conversation")
            # and the one who lost cannot type into it either
            loser_ws = alice if loser == "alice" else sam
            await loser_ws.send_json({"type": "send", "conversation_id": cid, "text": "hello", "id": "x-1"})
            assert f"{winner} holds it" in (await recv_until(loser_ws, "refused"))["message"]
            assert (await recv_until(loser_ws, "unsent"))["id"] == "x-1"
            # an id the queue never held
            await alice.send_json({"type": "accept", "conversation_id": "0" * 32})
            assert (await frames_until(alice, lambda f: f["type"] == "refused"))[-1]["code"] == "gone"
            for ws in (chat, alice, sam):
                await ws.close()


async def test_a_dropped_desktop_puts_the_chat_back_and_nothing_typed_is_lost(tmp_path):
    async with real_gateway(tmp_path, **FAST) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http, aiohttp.ClientSession() as desks:
            chat, cid = await customer(http, runner.url)
            await recv_until(chat, "ask")
            await say(chat, "I want to talk to an agent", until="queue")
            alice = await agent_desk(desks, runner.url, "alice")
            await recv_until(alice, "screen_pop")
            await alice.send_json({"type": "accept", "conversation_id": cid})
            await recv_until(alice, "active")
            await recv_until(chat, "agent_joined")
            # alice's desktop drops; she comes back within the grace period: she keeps it, and what
            # the customer typed meanwhile is in the transcript she gets back
            await alice.close()
            await chat.send_json({"type": "message", "text": "typed while the agent was away", "id": "c-away"})
            await recv_until(chat, "accepted")
            before_ready: list[dict[str, Any]] = []
            alice = await agent_desk(desks, runner.url, "alice", before_ready)
            back = next(f for f in before_ready if f["type"] == "active")  # right after the welcome
            assert back["conversation_id"] == cid
            assert "typed while the agent was away" in [l["text"] for l in back["context"]["transcript"]]
            # she sends twice the same message (a resend after a reconnect): the customer gets it once
            for _ in range(2):
                await alice.send_json({"type": "send", "conversation_id": cid, "text": "Still here!", "id": "d-9"})
                await recv_until(alice, "sent")
            got = await recv_until(chat, "agent_message")
            last_seq = got["seq"]
            # the customer's chat drops; alice keeps typing; the chat comes back and gets it all
            await chat.close()
            for i in range(3):
                await alice.send_json({"type": "send", "conversation_id": cid, "text": f"while you were away {i}",
                                       "id": f"d-away-{i}"})
                await recv_until(alice, "sent")
            chat, again = await customer(http, runner.url, since=last_seq)
            assert again == cid
            replayed = [f["text"] for f in await frames_until(chat, lambda f: f.get("text") == "while you were away 2")
                        if f["type"] == "agent_message"]
            assert replayed == ["while you were away 0", "while you were away 1", "while you were away 2"]
            said = [e.payload["text"] for e in await core.store.events(cid) if e.kind == "AgentSay"]
            assert said.count("Still here!") == 1
            # the customer resends an unacknowledged message: kept once
            for _ in range(2):
                await chat.send_json({"type": "message", "text": "sent twice", "id": "c-twice"})
                await recv_until(chat, "accepted")
            assert [e.payload.get("text") for e in await core.store.events(cid)].count("sent twice") == 1
            # now alice's desktop drops for good: after the grace period the chat is back in the
            # queue, first in line, and the customer is told
            await alice.close()
            left = await recv_until(chat, "agent_left", timeout=TIMEOUT)
            assert left["reason"] == "dropped" and "back in the queue" in left["text"]
            place = await recv_until(chat, "queue")
            assert place["position"] == 1
            entry = await runner.parts.human.queue.get(cid)
            assert entry is not None and not entry.taken
            audit = [(e.actor, e.action) for e in await runner.parts.audit.entries(conversation_id=cid)]
            assert ("system", "requeued") in audit
            # a supervisor signing in now is offered it (first in line)
            sam = await agent_desk(desks, runner.url, "sam")
            assert (await recv_until(sam, "screen_pop"))["conversation_id"] == cid
            await sam.close()
            await chat.close()


async def test_the_waiting_customer_may_leave_a_message_or_ask_for_a_callback(tmp_path):
    async with real_gateway(tmp_path, **FAST) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            chat, cid = await customer(http, runner.url)
            await recv_until(chat, "ask")
            for text in ("I want to dispute my bill", "12345678", "1985-03-14"):
                await say(chat, text)
            await say(chat, "I want to talk to an agent", until="queue")
            await chat.send_json({"type": "queue_choice", "choice": "callback"})
            said = await recv_until(chat, "say")
            assert "call you back" in said["text"] and "4567" in said["text"]
            place = await frames_until(chat, lambda f: f["type"] == "queue" and f["mode"] == "callback")
            assert place[-1]["choices"] == []
            entry = await runner.parts.human.queue.get(cid)
            assert entry.mode == "callback"
            await chat.send_json({"type": "queue_choice", "choice": "later"})
            assert (await recv_until(chat, "refused"))["code"] == "bad_schema"
            await chat.close()


async def test_queue_entries_survive_a_restart(tmp_path):
    """The queue is in the data directory: a gateway restarted finds who was waiting."""
    async with real_gateway(tmp_path, **FAST) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            chat, cid = await customer(http, runner.url)
            await recv_until(chat, "ask")
            await say(chat, "I want to talk to an agent", until="queue")
            await chat.close()
    async with real_gateway(tmp_path, **FAST) as (core, runner):
        entry = await runner.parts.human.queue.get(cid)
        assert entry is not None and entry.queue == "support"
        async with aiohttp.ClientSession() as desks:
            alice = await agent_desk(desks, runner.url, "alice")
            assert (await recv_until(alice, "screen_pop"))["conversation_id"] == cid
            await alice.close()
    assert q  # the module's transitions are what the stores above applied


async def test_a_desktop_flooding_messages_is_held_to_its_rate(tmp_path):
    """A stolen agent token scripting messages into a customer's chat: past a minute's worth at
    once the desktop is refused (and told which messages were not sent), the customer is not flooded."""
    from gateway.agents.desktop import COMMANDS_PER_MINUTE

    async with real_gateway(tmp_path, **FAST) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http, aiohttp.ClientSession() as desks:
            chat, cid = await customer(http, runner.url)
            await recv_until(chat, "ask")
            await say(chat, "I want to talk to an agent", until="queue")
            alice = await agent_desk(desks, runner.url, "alice")
            await recv_until(alice, "screen_pop")
            await alice.send_json({"type": "accept", "conversation_id": cid})
            await recv_until(alice, "active")
            total = COMMANDS_PER_MINUTE + 10
            for i in range(total):
                await alice.send_json({"type": "send", "conversation_id": cid, "text": f"spam {i}", "id": f"s-{i}"})
            outcome: dict[str, int] = {"sent": 0, "unsent": 0}
            while outcome["sent"] + outcome["unsent"] < total:
                frame = (await asyncio.wait_for(alice.receive(), TIMEOUT)).json()
                if frame["type"] in outcome:
                    outcome[frame["type"]] += 1
            assert outcome["unsent"] >= 9 and outcome["sent"] <= COMMANDS_PER_MINUTE + 1
            said = [e for e in await core.store.events(cid) if e.kind == "AgentSay"]
            assert len(said) == outcome["sent"]
            await chat.close()
            await alice.close()


async def test_a_typing_flood_is_a_message_flood(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            chat, cid = await customer(http, runner.url)
            await recv_until(chat, "ask")
            for _ in range(400):
                if chat.closed:
                    break
                await chat.send_str('{"type":"typing"}')
            while True:
                msg = await asyncio.wait_for(chat.receive(), TIMEOUT)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
            assert chat.close_code == 1008


async def test_an_offer_not_taken_goes_to_the_next_agent_and_waits_are_told(tmp_path):
    async with real_gateway(tmp_path, agents={"offer_seconds": 1.0, "dispatch_seconds": 0.2}) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http, aiohttp.ClientSession(cookie_jar=jar()) as http2, \
                aiohttp.ClientSession() as desks:
            alice = await agent_desk(desks, runner.url, "alice")
            sam = await agent_desk(desks, runner.url, "sam")
            chat, cid = await customer(http, runner.url)
            await recv_until(chat, "ask")
            await say(chat, "I want to talk to an agent", until="queue")
            first = await recv_until(alice, "screen_pop")  # an agent of the queue before a supervisor
            assert first["conversation_id"] == cid and first["offer"]
            second = await recv_until(sam, "screen_pop", timeout=10)  # alice let it lapse: the next one
            assert second["conversation_id"] == cid
            await sam.send_json({"type": "accept", "conversation_id": cid})
            await recv_until(sam, "active")
            # the next customer is told the typical wait, from the waits seen so far
            other, other_cid = await customer(http2, runner.url)
            await recv_until(other, "ask")
            place = (await say(other, "I want to talk to an agent", until="queue"))[-1]
            assert place["position"] == 1 and place["wait_seconds"] >= 1
            for ws in (chat, other, alice, sam):
                await ws.close()


async def test_a_call_rings_an_agent_and_becomes_theirs_through_ami(tmp_path):
    """AMI's AgentCalled and AgentConnect, as the telephony side reports them: the desktop of the
    agent whose phone rings pops the call; the one who answers holds it (their desktop going away
    does not put a call that is theirs back in the queue) and closes it with a disposition."""
    from gateway.core.events import CallStarted, UserSaid
    from tests.digital.helpers import AGENT_ACCOUNTS

    accounts = {**AGENT_ACCOUNTS, "alice": {**AGENT_ACCOUNTS["alice"], "interfaces": ["PJSIP/1001"]}}
    async with real_gateway(tmp_path, agents={"accounts": accounts, **FAST["agents"]}) as (core, runner):
        opened = await core.open("voice", caller_id="+15550001111", event=CallStarted(caller_id="+15550001111"))
        cid = opened.conversation_id
        await core.handle(cid, UserSaid(text="I want to talk to an agent"), session_id=opened.session_id)
        entry = await runner.parts.human.queue.get(cid)
        assert entry is not None and entry.voice and entry.queue == "support"
        async with aiohttp.ClientSession() as desks:
            alice = await agent_desk(desks, runner.url, "alice")
            await runner.agent_called(cid, "PJSIP/1001")
            ringing = await recv_until(alice, "screen_pop")
            assert ringing["state"] == "ringing" and ringing["conversation_id"] == cid and not ringing["offer"]
            assert (await runner.parts.human.queue.get(cid)).ringing == "alice"
            await runner.agent_connected(cid, "PJSIP/1001")
            active = await recv_until(alice, "active")
            assert active["context"]["handoff"]["agent"] == "alice"
            await alice.close()
            await asyncio.sleep(2.5)  # past the grace period: a call answered stays alice's
            assert (await runner.parts.human.queue.get(cid)).taken_by == "alice"
            alice = await agent_desk(desks, runner.url, "alice")
            await alice.send_json({"type": "close", "conversation_id": cid, "code": "resolved", "notes": "by phone"})
            assert (await recv_until(alice, "released"))["reason"] == "closed"
            await alice.close()
        ctx = await core.context(cid)
        assert ctx["status"] == "closed" and ctx["handoff"]["closings"][0]["notes"] == "by phone"
