"""Web chat over a real WebSocket to the real core (SQLite in tmp_path): journeys, bounds, floods,
resume, the chat-to-voice pivot."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from gateway.core.actions import Originate
from gateway.core.orchestrator import MASK
from gateway.digital.chat_protocol import ChatProtocolError, parse_client_frame
from tests.digital.helpers import ALICE, logged, real_gateway, recv_until

TIMEOUT = 20


def test_parse_client_frames():
    assert parse_client_frame('{"type":"message","text":"hi"}', max_message_chars=10).text == "hi"
    assert parse_client_frame('{"type":"accept_call","number":"+1 (555) 000-1111"}',
                              max_message_chars=10).number == "+15550001111"
    for raw, code in [("nope", "bad_json"), ("[1]", "bad_schema"), ('{"type":"x"}', "bad_schema"),
                      ('{"type":"message","text":5}', "bad_schema"),
                      ('{"type":"message","text":"hi","admin":true}', "bad_schema"),
                      ('{"type":"message","text":"   "}', "empty"),
                      ('{"type":"message","text":"' + "a" * 11 + '"}', "too_long"),
                      ('{"type":"accept_call","number":"555; DROP"}', "bad_number")]:
        with pytest.raises(ChatProtocolError) as exc:
            parse_client_frame(raw, max_message_chars=10)
        assert exc.value.code == code
    with pytest.raises(ChatProtocolError) as exc:
        parse_client_frame('{"type":"message","text":"' + "a" * 11 + '"}', max_message_chars=10)
    assert exc.value.text == "a" * 11  # echoed back so nothing typed is lost


async def _typed(core, cid: str = "") -> list[str]:
    """What the customer typed, as the core logged it."""
    return [e.payload["text"] for e in await logged(core, "ChatMessage", cid)]


async def _answered(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The core's next answer (a statement or a question)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        if frame["type"] in ("say", "ask"):
            return frame


async def _verify_as_alice(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Alice's identity check in the chat (account number, then PIN): the frames seen."""
    frames: list[dict[str, Any]] = []
    await recv_until(ws, "ask", frames)
    for text in ("I want to dispute my bill", "12345678", "4321"):
        await ws.send_json({"type": "message", "text": text})
        await recv_until(ws, "ask", frames)
    return frames


async def test_chat_runs_journey_and_verifies(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession() as http, http.ws_connect(runner.url + "/chat/ws") as ws:
            session = await recv_until(ws, "session")
            cid = session["conversation_id"]
            assert session["resumed"] is False and session["max_message_chars"] == 2000
            ask = await recv_until(ws, "ask")
            assert ask["text"].startswith("How can I help you today?")
            await ws.send_json({"type": "message", "text": "I want to dispute my bill"})
            assert (await recv_until(ws, "accepted"))["id"] == 1
            ask = await recv_until(ws, "ask")
            assert "account number" in ask["text"]
            await ws.send_json({"type": "message", "text": "12345678"})
            ask = await recv_until(ws, "ask")
            assert ask["expect"]["sensitive"] is True  # the PIN step: the page keeps it out of its history
            await ws.send_json({"type": "message", "text": "4321"})
            say = await recv_until(ws, "say")
            assert say["text"] == "Thank you Alice, you're verified."
            await ws.send_json({"type": "ping"})
            await recv_until(ws, "pong")
        assert "identity" in (await core.context(cid))["verified"]
        # the core's log has what was typed, the PIN masked (it was typed into a sensitive step)
        assert await _typed(core, cid) == ["I want to dispute my bill", "12345678", MASK]
        assert {e.channel for e in await logged(core, "ChatMessage", cid)} == {"chat"}


async def test_returning_customer_resumes_by_cookie_and_link(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                cid = (await recv_until(ws, "session"))["conversation_id"]
            assert "voicegw_chat" in {c.key for c in http.cookie_jar}
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                session = await recv_until(ws, "session")
                assert session == {"type": "session", "conversation_id": cid, "resumed": True,
                                   "max_message_chars": 2000}
        # a fresh browser with a chat link from a follow-up lands in the same conversation, once
        link = runner.parts.followups.link_for(cid, "chat")
        query = link.split("?", 1)[1]
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(runner.url + "/chat/ws?" + query) as ws:
                assert (await recv_until(ws, "session"))["conversation_id"] == cid
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(runner.url + "/chat/ws?" + query) as ws:
                frames: list[dict[str, Any]] = []
                session = await recv_until(ws, "session", frames)
                notice = await recv_until(ws, "notice")
                assert session["conversation_id"] != cid and "already used" in notice["text"]
        # a forged cookie is ignored: new conversation
        async with aiohttp.ClientSession(cookies={"voicegw_chat": "forged.value"}) as http:
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                assert (await recv_until(ws, "session"))["conversation_id"] != cid


async def test_oversized_message_refused_clearly_and_socket_stays(tmp_path):
    async with real_gateway(tmp_path, chat={"max_message_chars": 100}) as (core, runner):
        async with aiohttp.ClientSession() as http, http.ws_connect(runner.url + "/chat/ws") as ws:
            await recv_until(ws, "ask")
            long_text = "x" * 101
            await ws.send_json({"type": "message", "text": long_text})
            refused = await recv_until(ws, "refused")
            assert refused["code"] == "too_long" and "limit is 100" in refused["message"]
            assert refused["text"] == long_text
            await ws.send_json({"type": "message", "text": "short one"})
            assert (await recv_until(ws, "accepted"))["id"] == 1
            await _answered(ws)  # the core answered it
            # a frame beyond the WebSocket bound closes this socket only (1009)
            await ws.send_str(json.dumps({"type": "message", "text": "y" * 5000}))
            msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 1009
        assert await _typed(core) == ["short one"]
        assert runner.parts.metrics.value("voicegw_chat_refused_total", reason="too_long") == 1


async def test_flood_is_limited_and_closes_only_that_client(tmp_path):
    async with real_gateway(tmp_path, chat={"messages_per_minute": 5}) as (core, runner):
        async with aiohttp.ClientSession() as http:
            # another customer's chat, from the same address, is served by the same gateway throughout
            async with http.ws_connect(runner.url + "/chat/ws") as calm:
                calm_cid = (await recv_until(calm, "session"))["conversation_id"]
                await recv_until(calm, "ask")
                async with http.ws_connect(runner.url + "/chat/ws") as flood:
                    flood_cid = (await recv_until(flood, "session"))["conversation_id"]
                    await recv_until(flood, "ask")
                    for i in range(30):
                        await flood.send_json({"type": "message", "text": f"spam {i}"})
                    accepted, refused = [], []
                    while True:
                        msg = await asyncio.wait_for(flood.receive(), TIMEOUT)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        frame = json.loads(msg.data)
                        if frame["type"] == "accepted":
                            accepted.append(frame["id"])
                        elif frame["type"] == "refused":
                            refused.append(frame)
                    assert flood.close_code == 1008
                assert len(accepted) == 5
                assert refused and all(r["code"] == "rate_limited" for r in refused)
                assert {r["text"] for r in refused} <= {f"spam {i}" for i in range(30)}
                # every accepted message reached the conversation, every other one was handed back
                assert await _typed(core, flood_cid) == [f"spam {i}" for i in range(5)]
                assert len(refused) == 6  # closed once the flood passed twice the limit
                # the calm socket is still open and answered: the flood spent its own conversation's rate
                await calm.send_json({"type": "message", "text": "hello"})
                await _answered(calm)
                assert await _typed(core, calm_cid) == ["hello"]


async def test_bad_frames_close_only_the_bad_client(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(runner.url + "/chat/ws") as good, http.ws_connect(runner.url + "/chat/ws") as bad:
                await recv_until(bad, "ask")
                await recv_until(good, "ask")
                for raw in ["not json", "[]", '{"type":"shell","cmd":"ls"}', "{}", "1", "null", "x"]:
                    await bad.send_str(raw)
                codes = []
                while True:
                    msg = await asyncio.wait_for(bad.receive(), TIMEOUT)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    codes.append(json.loads(msg.data)["code"])
                assert bad.close_code == 1008
                assert codes[0] == "bad_json" and "bad_schema" in codes
                await good.send_json({"type": "message", "text": "still here"})
                await _answered(good)
        assert await _typed(core) == ["still here"]


async def test_chat_to_voice_pivot_emits_originate(tmp_path):
    placed: list[tuple[str, Originate]] = []

    async def telephony_sink(cid: str, action: Any) -> None:
        placed.append((cid, action))

    async with real_gateway(tmp_path) as (core, runner):
        core.register_sink(Originate, telephony_sink)  # a telephony channel carries out the core's calls
        async with aiohttp.ClientSession() as http, http.ws_connect(runner.url + "/chat/ws") as ws:
            cid = (await recv_until(ws, "session"))["conversation_id"]
            await _verify_as_alice(ws)  # the core offers a call to the number on file to a verified customer
            await ws.send_json({"type": "message", "text": "please call me"})
            offer = await recv_until(ws, "offer_call")
            assert offer["number"] == "***" + ALICE[-4:]  # the page learns a number is on file, not which
            await ws.send_json({"type": "accept_call"})
            say = await recv_until(ws, "say")
            assert "Calling you now" in say["text"]
        [(where, call)] = placed
        assert where == cid and (call.number, call.conversation_id, call.reason) == (ALICE, cid, "chat-to-voice")
        assert call.callback  # the answered call presents it to prove it is this call
        accepted = await logged(core, "CallAccepted", cid)
        assert [(e.channel, e.payload["number"]) for e in accepted] == [("chat", "")]  # the core calls what it offered


async def test_chat_followup_pushed_with_signed_link(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession() as http, http.ws_connect(runner.url + "/chat/ws") as ws:
            await recv_until(ws, "ask")
            for text in ("where is my order", "2 0 0 0 1"):
                await ws.send_json({"type": "message", "text": text})
                await recv_until(ws, "ask")
            await ws.send_json({"type": "message", "text": "yes"})  # the tracking link, in the chat
            frames: list[dict[str, Any]] = []
            followup = await recv_until(ws, "followup", frames)
            assert followup["url"].startswith(runner.url + "/l/")
            async with http.get(followup["url"]) as resp:
                page = await resp.text()
                assert resp.status == 200 and "20001" in page and "standing desk" in page


async def test_pages_and_metrics(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession() as http:
            for path, needle in [("/chat", "chat.js"), ("/chat/embed.js", "voicegw-chat-frame"),
                                 ("/healthz", '"status": "ok"'), ("/static/gateway.css", "--accent")]:
                async with http.get(runner.url + path) as resp:
                    assert resp.status == 200, path
                    assert needle in await resp.text(), path
            async with http.get(runner.url + "/chat/ws") as resp:
                assert resp.status == 400  # not a WebSocket handshake
            async with http.get(runner.url + "/metrics") as resp:
                text = await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert "# TYPE voicegw_http_requests_total counter" in text
            assert 'voicegw_http_requests_total{route="/chat",status="200"} 1.0' in text
            assert "voicegw_chat_sockets 0.0" in text


async def test_too_many_new_chats_from_one_client_refused(tmp_path):
    async with real_gateway(tmp_path, chat={"ip_new_chats_per_minute": 4}) as (core, runner):
        async with aiohttp.ClientSession() as http:
            for _ in range(4):
                async with http.ws_connect(runner.url + "/chat/ws") as ws:
                    await recv_until(ws, "session")
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(runner.url + "/chat/ws")
            assert exc.value.status == 429
        assert len(await core.store.recent(limit=10)) == 4  # the refused one created nothing
