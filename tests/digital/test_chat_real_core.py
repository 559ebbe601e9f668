"""The web chat through the real conversation core: verification, the returning customer
(conversation cookie, then customer cookie), follow-ups pushed into the chat."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from yarl import URL

from gateway.app import build_core
from tests.digital.helpers import start, web_settings


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    while True:
        frame = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        seen.append(frame)
        if frame["type"] == kind:
            return frame


async def _say(ws: aiohttp.ClientWebSocketResponse, text: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    await ws.send_json({"type": "message", "text": text})
    await _until(ws, "ask", seen)
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
                cid = (await _until(ws, "session", seen))["conversation_id"]
                await _until(ws, "ask", seen)
                await _say(ws, "I want to dispute my bill")
                await _say(ws, "12345678")
                frames = await _say(ws, "1985-03-14")
                assert any("you're verified" in f.get("text", "") for f in frames)
                frames = await _say(ws, "I was charged twice for the same month")
                frames = await _say(ws, "yes")
                followups = [f for f in frames if f["type"] == "followup"]
                assert followups and "700001" in followups[0]["text"]  # the case number, from the slots
            assert "identity" in (await core.context(cid))["verified"]
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                seen = []
                session = await _until(ws, "session", seen)
                ask = await _until(ws, "ask", seen)
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
                session = await _until(ws, "session", seen)
                await _until(ws, "ask", seen)
        ctx = await core.context(session["conversation_id"])
        assert ctx["customer"]["id"] == "C001"
        # a forged customer cookie names nobody
        async with aiohttp.ClientSession(cookies={"voicegw_customer": "x.y"}) as http:
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                other = await _until(ws, "session", [])
        assert (await core.context(other["conversation_id"]))["customer"]["id"] == ""
    finally:
        await runner.close()
        await core.store.close()
