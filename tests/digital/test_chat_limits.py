"""Chat abuse limits over real sockets and the real core: a client flooding from an address
never silences the honest customer at the same address; X-Forwarded-For counts only from a
trusted proxy; the node and each address hold a bounded number of open chats."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from gateway.app import build_core
from gateway.digital.chat_limits import QUIET_MESSAGES_PER_MINUTE
from tests.digital.helpers import recv_until, start, web_settings

TIMEOUT = 30
CHAT_MESSAGE = "ChatMessage"


@pytest.fixture
async def serve(tmp_path):
    made: list[Any] = []

    async def make(**overrides: Any):
        core = await build_core(web_settings(tmp_path, **overrides))
        runner = await start(tmp_path, core, deps={"store": core.store, "crm": core.crm}, **overrides)
        made.append((runner, core))
        return runner, core

    yield make
    for runner, core in made:
        await runner.close()
        await core.store.close()


async def flood(ws: aiohttp.ClientWebSocketResponse, count: int) -> tuple[list[int], list[dict[str, Any]]]:
    """Send ``count`` messages at once; read until the socket closes. (accepted ids, refusals)"""
    for i in range(count):
        await ws.send_json({"type": "message", "text": f"spam {i}"})
    accepted, refused = [], []
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return accepted, refused
        frame = json.loads(msg.data)
        if frame["type"] == "accepted":
            accepted.append(frame["id"])
        elif frame["type"] == "refused":
            refused.append(frame)


async def say(ws: aiohttp.ClientWebSocketResponse, text: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    await ws.send_json({"type": "message", "text": text})
    await recv_until(ws, "accepted", seen, timeout=TIMEOUT)
    await recv_until(ws, "ask", seen, timeout=TIMEOUT)
    return seen


async def test_a_flood_from_the_same_address_does_not_silence_the_honest_customer(serve):
    runner, core = await serve(chat={"messages_per_minute": 5, "ip_messages_per_minute": 12})
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(runner.url + "/chat/ws") as honest:  # 127.0.0.1, like the attacker
            await recv_until(honest, "ask", timeout=TIMEOUT)
            floods = []
            for _ in range(6):  # a flood script that reconnects for a fresh conversation when thrown out
                async with http.ws_connect(runner.url + "/chat/ws") as attacker:
                    cid = (await recv_until(attacker, "session", timeout=TIMEOUT))["conversation_id"]
                    floods.append((cid, *await flood(attacker, 60)))
                    assert attacker.close_code == 1008  # closed for flooding: its socket only
            for cid, accepted, refused in floods:
                assert refused and all(r["text"].startswith("spam ") and r["retry_after"] > 0 for r in refused)
                said = [e.payload.get("text") for e in await core.store.events(cid) if e.kind == CHAT_MESSAGE]
                assert said == [f"spam {i}" for i in range(len(accepted))]  # refused ones never reached the core
            assert [len(a) for _, a, _ in floods[:3]] == [5, 5, 5]  # each conversation's own 5
            # the address's 12 are spent: conversations started now start unproven and get (almost) nothing
            assert sum(len(a) for _, a, _ in floods[3:]) <= 2
            assert all(r["code"] == "address_rate_limited" for _, _, refused in floods[3:] for r in refused)
            # the honest customer at the same address keeps chatting, five messages in a row
            frames = await say(honest, "where is my order")
            assert any("order" in f.get("text", "").lower() for f in frames if f["type"] in ("say", "ask"))
            for text in ("A1001", "yes", "repeat that", "help"):
                await honest.send_json({"type": "message", "text": text})
                await recv_until(honest, "accepted", timeout=TIMEOUT)
    metrics = runner.parts.metrics
    assert metrics.value("voicegw_chat_refused_total", reason="rate_limited") > 0
    assert metrics.value("voicegw_chat_refused_total", reason="address_rate_limited") > 0


async def test_the_address_bound_refuses_busy_conversations_not_quiet_ones(serve):
    runner, core = await serve(chat={"messages_per_minute": 30, "ip_messages_per_minute": 25})
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(runner.url + "/chat/ws") as busy, \
                http.ws_connect(runner.url + "/chat/ws") as quiet:
            await recv_until(busy, "ask", timeout=TIMEOUT)
            cid = (await recv_until(quiet, "session", timeout=TIMEOUT))["conversation_id"]
            await recv_until(quiet, "ask", timeout=TIMEOUT)
            for i in range(25):  # the address's 25, all spent by one conversation
                await busy.send_json({"type": "message", "text": f"busy {i}"})
                await recv_until(busy, "accepted", timeout=TIMEOUT)
            # that conversation still has its own tokens, but it is busy and the address is spent:
            # refused, the text handed back, the socket left open
            await busy.send_json({"type": "message", "text": "keep this"})
            refused = await recv_until(busy, "refused", timeout=TIMEOUT)
            assert refused["code"] == "address_rate_limited" and refused["text"] == "keep this"
            assert "your network" in refused["message"] and refused["retry_after"] > 0
            await busy.send_json({"type": "message", "text": "and this"})
            assert (await recv_until(busy, "refused", timeout=TIMEOUT))["text"] == "and this" and not busy.closed
            # the quiet customer at the same address is not refused for it
            for text in ("where is my order", "A1001", "yes"):
                await quiet.send_json({"type": "message", "text": text})
                await recv_until(quiet, "accepted", timeout=TIMEOUT)
            # the reserve (25 more) is for quiet conversations only: past its quiet pace this one
            # is busy too, and refused although the reserve has some left
            fast = QUIET_MESSAGES_PER_MINUTE - 3
            for i in range(fast + 2):
                await quiet.send_json({"type": "message", "text": f"fast {i}"})
                frame = await recv_until(quiet, "accepted" if i < fast else "refused", timeout=TIMEOUT)
                assert i < fast or frame["code"] == "address_rate_limited"
    said = [e.payload.get("text") for e in await core.store.events(cid) if e.kind == CHAT_MESSAGE]
    assert said == ["where is my order", "A1001", "yes"] + [f"fast {i}" for i in range(fast)]


async def test_forwarded_for_from_an_untrusted_peer_changes_nothing(serve):
    runner, _ = await serve(chat={"ip_new_chats_per_minute": 3})
    async with aiohttp.ClientSession() as http:
        for i in range(3):
            async with http.ws_connect(runner.url + "/chat/ws",
                                       headers={"X-Forwarded-For": f"203.0.113.{i}"}) as ws:
                await recv_until(ws, "session", timeout=TIMEOUT)
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(runner.url + "/chat/ws", headers={"X-Forwarded-For": "198.51.100.77"})
        assert exc.value.status == 429 and int(exc.value.headers["Retry-After"]) >= 1
    assert runner.parts.metrics.value("voicegw_chat_refused_total", reason="too_many_new_chats") == 1


async def test_forwarded_for_from_a_trusted_proxy_keys_each_client(serve, caplog):
    runner, _ = await serve(web={"trusted_proxies": ["127.0.0.1"]}, chat={"ip_new_chats_per_minute": 2})
    caplog.set_level("INFO", logger="gateway.digital.chat")
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # the client wrote 6.6.6.6 itself; the proxy appended what it saw
            async with http.ws_connect(runner.url + "/chat/ws",
                                       headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}) as ws:
                await recv_until(ws, "session", timeout=TIMEOUT)
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(runner.url + "/chat/ws", headers={"X-Forwarded-For": "7.7.7.7, 203.0.113.7"})
        assert exc.value.status == 429
        # another customer behind the same proxy is its own client
        async with http.ws_connect(runner.url + "/chat/ws", headers={"X-Forwarded-For": "198.51.100.9"}) as ws:
            await recv_until(ws, "ask", timeout=TIMEOUT)
    assert "chat session refused from 203.0.113.7: too many new chats" in caplog.text
    assert "from 198.51.100.9" in caplog.text and "6.6.6.6" not in caplog.text


async def test_open_chats_are_capped_per_node_and_per_address(serve):
    runner, _ = await serve(web={"trusted_proxies": ["127.0.0.1"]}, chat={"max_sessions": 3, "ip_max_sessions": 2})
    office = {"X-Forwarded-For": "203.0.113.50"}
    async with aiohttp.ClientSession() as http:
        a = await http.ws_connect(runner.url + "/chat/ws", headers=office)
        b = await http.ws_connect(runner.url + "/chat/ws", headers=office)
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:  # the address holds its 2
            await http.ws_connect(runner.url + "/chat/ws", headers=office)
        assert exc.value.status == 429
        c = await http.ws_connect(runner.url + "/chat/ws", headers={"X-Forwarded-For": "198.51.100.1"})
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:  # the node holds its 3
            await http.ws_connect(runner.url + "/chat/ws", headers={"X-Forwarded-For": "198.51.100.2"})
        assert exc.value.status == 503 and exc.value.headers["Retry-After"] == "5"
        assert runner.parts.metrics.value("voicegw_sessions_refused_total", server="chat") == 1
        for ws in (a, b, c):
            await recv_until(ws, "ask", timeout=TIMEOUT)  # the open chats are served throughout
        await a.close()
        await asyncio.sleep(0.2)  # the server sees the close
        async with http.ws_connect(runner.url + "/chat/ws", headers={"X-Forwarded-For": "198.51.100.2"}) as d:
            await recv_until(d, "ask", timeout=TIMEOUT)  # one ended: a new one is served
        await b.close()
        await c.close()
        async with http.get(runner.url + "/metrics") as resp:
            assert 'voicegw_sessions_refused_total{server="chat"} 1.0' in await resp.text()


async def test_reopening_a_conversation_spends_its_rate(serve):
    runner, _ = await serve(chat={"messages_per_minute": 3})
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.ws_connect(runner.url + "/chat/ws") as ws:
            cid = (await recv_until(ws, "session", timeout=TIMEOUT))["conversation_id"]
        for _ in range(3):
            async with http.ws_connect(runner.url + "/chat/ws") as ws:
                assert (await recv_until(ws, "session", timeout=TIMEOUT))["conversation_id"] == cid
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(runner.url + "/chat/ws")
        assert exc.value.status == 429
    async with aiohttp.ClientSession() as http:  # a new visitor at the same address is not touched
        async with http.ws_connect(runner.url + "/chat/ws") as ws:
            assert (await recv_until(ws, "session", timeout=TIMEOUT))["conversation_id"] != cid


def test_an_address_never_gets_more_than_twice_its_bound():
    from gateway.config import ChatSettings
    from gateway.digital.chat_limits import ChatLimits

    now = [0.0]
    limits = ChatLimits(ChatSettings(messages_per_minute=30, ip_messages_per_minute=20), clock=lambda: now[0])
    # forty quiet conversations at one address, each sending what a person might (3 at once)
    accepted = sum(limits.message(f"c{n}", "10.1.1.1") is None for n in range(40) for _ in range(3))
    assert accepted == 40  # the address's 20, then its reserve's 20: nothing more
    assert limits.message("c0", "10.1.1.2") is None  # another address is untouched
    # a conversation started while the address is over its bound has to earn its quietness
    limits.started("late", "10.1.1.1")
    refusal = limits.message("late", "10.1.1.1")
    assert refusal is not None and refusal.code == "address_rate_limited" and refusal.retry_after > 0
    now[0] += 60.0 / QUIET_MESSAGES_PER_MINUTE * 2  # a person's pace later (the address refills too)
    assert limits.message("late", "10.1.1.1") is None
    # half a minute on the address has refilled, but it was refused lately: still under pressure
    now[0] += 30.0
    for n in range(3):  # a flood script opens fresh conversations while the address has refilled
        limits.started(f"script{n}", "10.1.1.1")
    for n in range(3):  # they spend what the address has...
        while limits.message(f"script{n}", "10.1.1.1") is None:
            pass
        assert limits.message(f"script{n}", "10.1.1.1").code == "address_rate_limited"
    assert limits.message("c1", "10.1.1.1") is None  # ...but not the reserve of the quiet ones
    # a conversation's own rate comes first, whatever its address has left
    roomy = ChatLimits(ChatSettings(messages_per_minute=30, ip_messages_per_minute=300), clock=lambda: now[0])
    assert all(roomy.message("own", "10.9.9.9") is None for _ in range(30))
    assert roomy.message("own", "10.9.9.9").code == "rate_limited"
