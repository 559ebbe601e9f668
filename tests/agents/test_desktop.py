"""Agent desktop: sign-in refusals, REST context, screen-pop routing by skills and language,
the agent_connected hook, and two gateway nodes sharing screen-pops through a fan-out
(in-process and a real Redis)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from gateway.agents.registry import AgentRegistry
from gateway.context.fanout import InProcessFanout, RedisFanout
from gateway.core.events import ChatMessage
from tests.digital.fake_core import FakeCore
from tests.digital.helpers import recv_until, start
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)

TIMEOUT = 20


def jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # keep cookies from 127.0.0.1 as a browser does


async def desk(http: aiohttp.ClientSession, url: str, token: str, skills: list[str], languages: list[str]) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{url}/agent/ws?token={token}")
    await recv_until(ws, "welcome")
    await ws.send_json({"type": "ready", "skills": skills, "languages": languages})
    await recv_until(ws, "ready")
    return ws


async def wait_for_agents(runner: Any, count: int) -> None:
    for _ in range(200):
        if len(runner.parts.desktop.registry.agents()) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("agents did not appear in the registry")


def test_registry_prefers_skills_then_least_busy():
    now = [0.0]
    reg = AgentRegistry(clock=lambda: now[0])
    reg.update("alice", node="n", skills={"billing"}, languages={"en"}, available=True)
    now[0] = 1
    reg.update("bob", node="n", skills={"support"}, languages={"en", "es"}, available=True)
    reg.update("carol", node="n", skills={"billing"}, languages={"fr"}, available=True)
    assert reg.choose(("billing",), "en") == "alice"
    assert reg.choose((), "es-MX") == "bob"
    reg.update("dave", node="n", skills={"billing"}, languages={"en"}, available=True)
    assert reg.choose(("billing",), "en") == "dave"  # alice already has one: the least busy wins
    reg.update("alice", node="n", skills={"billing"}, languages={"en"}, available=False)
    reg.update("bob", node="n", skills={"support"}, languages={"en", "es"}, available=False)
    reg.remove("dave")
    assert reg.choose(("billing",), "fr") == "carol"
    assert reg.choose(("billing",), "en") == "carol"  # nobody speaks it: a person beats nobody
    reg.update("carol", node="n", skills={"billing"}, languages={"fr"}, available=False)
    assert reg.choose(("billing",), "en") == ""


async def test_agent_page_refused_without_valid_token(tmp_path, caplog):
    runner = await start(tmp_path, FakeCore())
    try:
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            async with http.get(runner.url + "/agent") as resp:
                assert resp.status == 401
                page = await resp.text()
                assert "Sign in with your agent token" in page and "agent.js" not in page
            async with http.get(runner.url + "/agent?token=wrong") as resp:
                assert resp.status == 403 and "not valid" in await resp.text()
            async with http.post(runner.url + "/agent/login", data={"token": "nope"}) as resp:
                assert resp.status == 403
            async with http.get(runner.url + "/agent/ws") as resp:
                assert resp.status == 403
            async with http.get(runner.url + "/agent/ws", headers={"Cookie": "voicegw_agent=forged.cookie"}) as resp:
                assert resp.status == 403
            # a valid token from a foreign page (cross-site WebSocket) is refused too
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(runner.url + "/agent/ws?token=tok-alice",
                                      headers={"Origin": "http://evil.example"})
            assert exc.value.status == 403
            async with http.post(runner.url + "/agent/login", data={"token": "tok-alice"}) as resp:
                assert resp.status == 200 and "agent.js" in await resp.text()
            async with http.get(runner.url + "/agent") as resp:  # the session cookie now signs in
                assert resp.status == 200
        assert any("agent desktop refused" in r.getMessage() for r in caplog.records)
    finally:
        await runner.close()


async def test_rest_context_needs_agent_token(tmp_path):
    core = FakeCore()
    runner = await start(tmp_path, core)
    try:
        cid = (await core.open("chat")).conversation_id
        url = f"{runner.url}/api/conversations/{cid}/context"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
            async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 403
            async with http.get(url, headers={"Authorization": "Bearer tok-bob"}) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body == await core.context(cid)
            async with http.get(f"{runner.url}/api/conversations/nope/context",
                                headers={"Authorization": "Bearer tok-bob"}) as resp:
                assert resp.status == 404
    finally:
        await runner.close()


async def test_screen_pop_goes_to_the_agent_with_the_skill(tmp_path):
    core = FakeCore()
    runner = await start(tmp_path, core)
    try:
        async with aiohttp.ClientSession() as http:
            bob = await desk(http, runner.url, "tok-bob", ["support"], ["en"])
            alice = await desk(http, runner.url, "tok-alice", ["billing", "Disputes"], ["en"])
            cid = (await core.open("chat")).conversation_id
            await core.handle(cid, ChatMessage(text="verify me"))
            await core.handle(cid, ChatMessage(text="1234"))
            await core.handle(cid, ChatMessage(text="I want an agent"))
            pop = await recv_until(alice, "screen_pop")
            assert pop["conversation_id"] == cid
            ctx = pop["context"]
            assert ctx["customer"]["name"] == "Dana Example" and "identity" in ctx["verified"]
            assert ctx["intent"] == "billing_dispute" and ctx["suggested_next_steps"]
            texts = [line["text"] for line in ctx["transcript"]]
            assert "I want an agent" in texts and "[redacted]" in texts and "1234" not in texts
            # bob (no billing skill) got nothing; the hook pops the agent who really answered
            await runner.parts.desktop.agent_connected(cid, "bob")
            pop_b = await recv_until(bob, "screen_pop")
            assert pop_b["conversation_id"] == cid
            assert runner.parts.metrics.value("voicegw_screenpops_total") == 2
            await alice.close()
            await bob.close()
    finally:
        await runner.close()


async def test_unrouted_screen_pop_is_counted_not_fatal(tmp_path):
    core = FakeCore()
    runner = await start(tmp_path, core)
    try:
        cid = (await core.open("chat")).conversation_id
        actions = await core.handle(cid, ChatMessage(text="agent please"))
        assert any(a.kind == "Transfer" for a in actions)
        assert runner.parts.metrics.value("voicegw_screenpops_unrouted_total") == 1
    finally:
        await runner.close()


async def _two_nodes(tmp_path: Any, fanout_a: Any, fanout_b: Any) -> None:
    core_a, core_b = FakeCore(), FakeCore()
    core_b.conversations = core_a.conversations  # the shared context store of two nodes
    node_a = await start(tmp_path / "a", core_a, deps={"fanout": fanout_a})
    node_b = await start(tmp_path / "b", core_b, deps={"fanout": fanout_b})
    try:
        async with aiohttp.ClientSession() as http:
            alice = await desk(http, node_b.url, "tok-alice", ["billing"], ["en"])
            await wait_for_agents(node_a, 1)
            cid = (await core_a.open("chat")).conversation_id
            await core_a.handle(cid, ChatMessage(text="agent"))  # transferred on node A
            pop = await recv_until(alice, "screen_pop")           # popped on node B
            assert pop["conversation_id"] == cid and pop["context"]["transcript"]
            await alice.close()
        assert node_b.parts.metrics.value("voicegw_screenpops_total") == 1
        for _ in range(200):
            if not node_a.parts.desktop.registry.agents():
                break
            await asyncio.sleep(0.05)
        assert not node_a.parts.desktop.registry.agents()  # alice's sign-out reached node A
    finally:
        await node_a.close()
        await node_b.close()


async def test_two_nodes_share_screen_pops_in_process(tmp_path):
    hub = InProcessFanout()
    await _two_nodes(tmp_path, hub, hub)
    await hub.close()


async def test_two_nodes_share_screen_pops_through_redis(tmp_path, redis_url):  # noqa: F811
    fanout_a, fanout_b = RedisFanout(redis_url), RedisFanout(redis_url)
    try:
        await _two_nodes(tmp_path, fanout_a, fanout_b)
    finally:
        await fanout_a.close()
        await fanout_b.close()


async def test_unreachable_redis_fanout_does_not_stop_the_desktop(tmp_path, caplog):
    from tests.redis_server import free_port

    fanout = RedisFanout(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    core = FakeCore()
    runner = await start(tmp_path, core, deps={"fanout": fanout})
    try:
        async with aiohttp.ClientSession() as http:
            alice = await desk(http, runner.url, "tok-alice", ["billing"], ["en"])
            cid = (await core.open("chat")).conversation_id
            await core.handle(cid, ChatMessage(text="agent"))
            pop = await recv_until(alice, "screen_pop")  # delivered on this node without Redis
            assert pop["conversation_id"] == cid
            await alice.close()
        assert any("fan-out" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)
    finally:
        await runner.close()
        await fanout.close()


async def test_bad_desktop_frames_close_that_desktop_only(tmp_path):
    core = FakeCore()
    runner = await start(tmp_path, core)
    try:
        async with aiohttp.ClientSession() as http:
            good = await desk(http, runner.url, "tok-alice", ["billing"], ["en"])
            bad = await http.ws_connect(f"{runner.url}/agent/ws?token=tok-bob")
            await recv_until(bad, "welcome")
            for raw in ["nope", "[]", '{"type":"ready","skills":"all"}', '{"type":"ready","skills":[1]}',
                        '{"type":"admin"}', "{}", "null"]:
                await bad.send_str(raw)
            refusals = 0
            while True:
                msg = await asyncio.wait_for(bad.receive(), TIMEOUT)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                refusals += json.loads(msg.data)["type"] == "refused"
            assert refusals == 6 and bad.closed
            big = await http.ws_connect(f"{runner.url}/agent/ws?token=tok-bob")
            await recv_until(big, "welcome")
            await big.send_str('{"type":"ready","skills":["' + "x" * 10_000 + '"]}')
            msg = await asyncio.wait_for(big.receive(), TIMEOUT)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and big.close_code == 1009
            cid = (await core.open("chat")).conversation_id
            await core.handle(cid, ChatMessage(text="agent"))
            assert (await recv_until(good, "screen_pop"))["conversation_id"] == cid
            await good.close()
    finally:
        await runner.close()
