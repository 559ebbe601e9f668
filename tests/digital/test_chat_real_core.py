"""The web chat through the real conversation core: verification, the returning customer
(conversation cookie, then customer cookie), SMS follow-ups to the phone on file."""

from __future__ import annotations

from typing import Any

import aiohttp
from yarl import URL

from gateway.app import build_core
from tests.digital.helpers import recv_until, start, web_settings


async def _say(ws: aiohttp.ClientWebSocketResponse, text: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    await ws.send_json({"type": "message", "text": text})
    await recv_until(ws, "ask", seen, timeout=30)
    return seen


async def test_returning_customer_through_the_real_core(tmp_path):
    settings = web_settings(tmp_path)
    core = await build_core(settings)
    runner = await start(tmp_path, core, deps={"store": core.store, "crm": core.crm})
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                seen: list[dict[str, Any]] = []
                cid = (await recv_until(ws, "session", seen, timeout=30))["conversation_id"]
                await recv_until(ws, "ask", seen, timeout=30)
                await _say(ws, "I want to dispute my bill")
                await _say(ws, "12345678")
                frames = await _say(ws, "1985-03-14")
                assert any("you're verified" in f.get("text", "") for f in frames)
                frames = await _say(ws, "I was charged twice for the same month")
                frames = await _say(ws, "yes")
                # follow_up: sms goes to the phone on file, never into the chat
                assert not [f for f in frames if f["type"] == "followup"]
                sms = runner.parts.outbox.messages(to="+15551234567")
                assert sms and "700001" in sms[-1].body  # the case number, from the slots
            assert "identity" in (await core.context(cid))["verified"]
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                seen = []
                session = await recv_until(ws, "session", seen, timeout=30)
                ask = await recv_until(ws, "ask", seen, timeout=30)
                assert session["conversation_id"] == cid and session["resumed"] is True
                assert any("already verified" in f.get("text", "") for f in seen)
                assert "identity" not in ask["text"]
            cookies = {c.key: c.value for c in jar}
            assert "voicegw_customer" in cookies
        # a later visit with only the long-lived customer cookie (the conversation cookie has
        # expired): the customer is known to the core, which resumes or starts their conversation
        jar2 = aiohttp.CookieJar(unsafe=True)
        jar2.update_cookies({"voicegw_customer": cookies["voicegw_customer"]}, response_url=URL(runner.url))
        async with aiohttp.ClientSession(cookie_jar=jar2) as http:
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                seen = []
                session = await recv_until(ws, "session", seen, timeout=30)
                await recv_until(ws, "ask", seen, timeout=30)
        ctx = await core.context(session["conversation_id"])
        assert ctx["customer"]["id"] == "C001"
        # a forged customer cookie names nobody
        async with aiohttp.ClientSession(cookies={"voicegw_customer": "x.y"}) as http:
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                other = await recv_until(ws, "session", [], timeout=30)
        assert (await core.context(other["conversation_id"]))["customer"]["id"] == ""
    finally:
        await runner.close()
        await core.store.close()
