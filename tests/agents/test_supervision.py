"""The supervisor page over real sockets: the live list, a watched transcript as it happens,
taking over, whispering to the agent, steering the bot; who may do it, and the audit log."""

from __future__ import annotations

import aiohttp
import pytest

from tests.agents.helpers import bearer, jar, real_gateway
from tests.agents.test_live_chat import FAST, agent_desk, customer, frames_until, say
from tests.digital.helpers import recv_until, sign_in


async def supervisor(http: aiohttp.ClientSession, url: str, name: str = "sam") -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{url}/supervisor/ws", headers=bearer(name))
    await recv_until(ws, "welcome")
    return ws


async def test_only_supervisors_open_the_page(tmp_path):
    async with real_gateway(tmp_path) as (_core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            async with http.get(runner.url + "/supervisor") as resp:
                assert resp.status == 401 and "Sign in" in await resp.text()
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(runner.url + "/supervisor/ws")
            assert exc.value.status == 401
            await sign_in(http, runner.url, "alice")
            async with http.get(runner.url + "/supervisor") as resp:
                assert resp.status == 403 and "only a supervisor or an admin" in await resp.text()
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(runner.url + "/supervisor/ws")
            assert exc.value.status == 403
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            await sign_in(http, runner.url, "sam")
            async with http.get(runner.url + "/supervisor") as resp:
                assert resp.status == 200 and "supervisor.js" in await resp.text()
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(runner.url + "/supervisor/ws", headers={"Origin": "http://evil.example"})
            assert exc.value.status == 403


async def test_watch_whisper_steer_and_take_over(tmp_path):
    async with real_gateway(tmp_path, **FAST) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http, aiohttp.ClientSession(cookie_jar=jar()) as http2, \
                aiohttp.ClientSession() as desks:
            # a chat with the bot, and one held by alice
            bot_chat, bot_cid = await customer(http, runner.url)
            await recv_until(bot_chat, "ask")
            await say(bot_chat, "where is my order")
            held_chat, held_cid = await customer(http2, runner.url)
            await recv_until(held_chat, "ask")
            await say(held_chat, "I want to talk to an agent", until="queue")
            alice = await agent_desk(desks, runner.url, "alice")
            await recv_until(alice, "screen_pop")
            await alice.send_json({"type": "accept", "conversation_id": held_cid})
            await recv_until(alice, "active")

            sam = await supervisor(desks, runner.url)
            listed = await recv_until(sam, "conversations")
            rows = {row["conversation_id"]: row for row in listed["conversations"]}
            assert rows[bot_cid]["journey"] == "order_status" and rows[bot_cid]["step"] == "ask_order"
            assert rows[held_cid]["agent"] == "alice" and rows[bot_cid]["channel"] == "chat"
            state = await recv_until(sam, "state")
            assert any(a["agent_id"] == "alice" and a["holding"] == 1 for a in state["agents"])

            # watch the bot's chat: its transcript, then its lines as they are logged
            await sam.send_json({"type": "watch", "conversation_id": bot_cid})
            transcript = await recv_until(sam, "transcript")
            assert "where is my order" in [l["text"] for l in transcript["context"]["transcript"]]
            await say(bot_chat, "123")
            lines = await frames_until(sam, lambda f: f["type"] == "lines" and f["conversation_id"] == bot_cid)
            assert ("customer", "123") in [(l["who"], l["text"]) for l in lines[-1]["lines"]]

            # steer the bot: offer an agent, then back to the order question
            await sam.send_json({"type": "steer", "conversation_id": bot_cid, "instruction": "offer_agent"})
            offered = await recv_until(bot_chat, "say")
            assert "talk to a person" in offered["text"] and offered["seq"] > 0
            await recv_until(sam, "done")
            await sam.send_json({"type": "steer", "conversation_id": bot_cid, "instruction": "goto", "step": "nope"})
            assert "has no step nope" in (await recv_until(sam, "refused"))["message"]
            # steering a conversation an agent holds is refused
            await sam.send_json({"type": "steer", "conversation_id": held_cid, "instruction": "end"})
            assert "people have this conversation" in (await recv_until(sam, "refused"))["message"]

            # whisper to alice: she sees it, the customer never does
            await sam.send_json({"type": "whisper", "conversation_id": held_cid,
                                 "text": "Offer the goodwill voucher."})
            whisper = await recv_until(alice, "whisper")
            assert whisper["text"] == "Offer the goodwill voucher." and whisper["from"] == "sam"
            await sam.send_json({"type": "whisper", "conversation_id": bot_cid, "text": "hello?"})
            assert "no agent holds" in (await recv_until(sam, "refused"))["message"]

            # take the bot's chat over for bob: the customer is told, bob holds it at once
            bob = await agent_desk(desks, runner.url, "bob")
            await sam.send_json({"type": "take_over", "conversation_id": bot_cid, "agent": "bob"})
            frames = await frames_until(bot_chat, lambda f: f["type"] == "agent_joined")
            assert frames[-1]["name"] == "bob" and any(f["type"] == "transfer" for f in frames)
            active = await recv_until(bob, "active")
            assert active["conversation_id"] == bot_cid and active["context"]["handoff"]["agent"] == "bob"
            await bob.send_json({"type": "send", "conversation_id": bot_cid, "text": "Bob here.", "id": "b-1"})
            assert (await recv_until(bot_chat, "agent_message"))["text"] == "Bob here."
            await sam.send_json({"type": "take_over", "conversation_id": held_cid, "agent": "bob"})
            assert "alice holds it" in (await recv_until(sam, "refused"))["message"]
            await sam.send_json({"type": "take_over", "conversation_id": held_cid, "agent": "nobody"})
            assert "no agent account nobody" in (await recv_until(sam, "refused"))["message"]
            for ws in (bot_chat, held_chat, alice, bob, sam):
                await ws.close()
        audit = [(e.actor, e.action, e.detail.get("via", "")) for e in await runner.parts.audit.entries(limit=500)]
        for expected in (("sam", "supervise", ""), ("sam", "read", "page"), ("sam", "steer", ""),
                         ("sam", "steer_refused", ""), ("sam", "whisper", ""), ("sam", "whisper_refused", ""),
                         ("sam", "take_over", ""), ("sam", "take_over_refused", "")):
            assert expected in audit, expected
        whispered = next(e for e in await runner.parts.audit.entries(conversation_id=held_cid) if e.action == "whisper")
        assert whispered.detail == {"agent": "alice", "chars": "27"}  # the note itself is not kept there


async def test_agents_cannot_supervise_even_with_a_hand_made_frame(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession() as http:
            chat_cid = (await core.open("chat")).conversation_id
            alice = await agent_desk(http, runner.url, "alice")
            # the desktop socket has no supervisor frames at all
            await alice.send_json({"type": "take_over", "conversation_id": chat_cid, "agent": "alice"})
            assert "type must be one of" in (await recv_until(alice, "refused"))["message"]
            await alice.send_json({"type": "steer", "conversation_id": chat_cid, "instruction": "end"})
            assert "type must be one of" in (await recv_until(alice, "refused"))["message"]
            await alice.close()
        assert (await core.context(chat_cid))["status"] == "active"
