"""Agent desktop through the real core: sign-in by form and cookie, the REST context API,
screen-pops routed by queue, skills and language, the agent_connected hook, and two gateway
nodes sharing screen-pops and assignments through a fan-out (in-process and a real Redis)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from gateway.context.fanout import InProcessFanout, RedisFanout
from tests.agents.helpers import bearer, desk, jar, no_frame, real_gateway, transferred, wait_for_agents
from tests.digital.helpers import AGENT_TOKENS, recv_until
from tests.redis_server import free_port, redis_server, redis_url  # noqa: F401  (pytest fixtures)

TIMEOUT = 20


async def test_sign_in_by_form_sets_a_strict_http_only_cookie(tmp_path):
    async with real_gateway(tmp_path) as (_core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            async with http.get(runner.url + "/agent") as resp:
                assert resp.status == 401
                page = await resp.text()
                assert "Sign in with your agent token" in page and "agent.js" not in page
                assert 'method="post" action="/agent/login"' in page
            async with http.post(runner.url + "/agent/login", data={"token": "alice.nope"}) as resp:
                assert resp.status == 403 and "not valid" in await resp.text()
            async with http.get(runner.url + "/agent/ws") as resp:
                assert resp.status == 401
            async with http.get(runner.url + "/agent/ws", headers={"Cookie": "voicegw_agent=forged.cookie"}) as resp:
                assert resp.status == 401
            # a valid token from a foreign page (cross-site WebSocket, cross-site form) is refused
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(runner.url + "/agent/ws",
                                      headers={**bearer("alice"), "Origin": "http://evil.example"})
            assert exc.value.status == 403
            async with http.post(runner.url + "/agent/login", data={"token": AGENT_TOKENS["alice"]},
                                 headers={"Origin": "http://evil.example"}) as resp:
                assert resp.status == 403
            async with http.post(runner.url + "/agent/login", data={"token": AGENT_TOKENS["alice"]},
                                 allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/agent"
                cookie = resp.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            assert "Max-Age=43200" in cookie and "Secure" not in cookie  # served over plain http here
            assert AGENT_TOKENS["alice"] not in cookie
            async with http.get(runner.url + "/agent") as resp:  # the session cookie now signs in
                assert resp.status == 200 and "agent.js" in await resp.text()
            ws = await http.ws_connect(runner.url + "/agent/ws")
            welcome = await recv_until(ws, "welcome")
            assert {k: welcome[k] for k in ("type", "agent_id", "role", "queues")} == {
                "type": "welcome", "agent_id": "alice", "role": "agent", "queues": ["billing", "support"]}
            assert welcome["dispositions"][0] == "resolved" and "ask_order" in welcome["journeys"]["order_status"]
            await ws.close()
            async with http.post(runner.url + "/agent/logout", allow_redirects=False) as resp:
                assert resp.status == 303
            async with http.get(runner.url + "/agent") as resp:
                assert resp.status == 401
        actions = [(e.actor, e.action) for e in await runner.parts.audit.entries()]
        assert ("alice", "signin") in actions and ("alice", "signout") in actions
        assert ("alice", "signin_refused") in actions


async def test_rest_context_needs_a_token_and_the_right(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        cid = await transferred(core, "support")
        url = f"{runner.url}/api/conversations/{cid}/context"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
            async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 403
            async with http.get(url, headers=bearer("alice")) as resp:
                assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
                body = await resp.json()
            assert body == await core.context(cid)
            async with http.get(url, headers=bearer("bob")) as resp:
                assert resp.status == 403 and "bob" in (await resp.json())["error"]
            async with http.get(f"{runner.url}/api/conversations/nope/context", headers=bearer("alice")) as resp:
                assert resp.status == 404


async def test_screen_pop_goes_to_an_agent_of_the_queue_with_the_skill(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession() as http:
            bob = await desk(http, runner.url, "bob", ["billing"])  # the skill, but not the queue
            alice = await desk(http, runner.url, "alice", ["billing", "Disputes"])
            cid = await transferred(core, "billing")
            pop = await recv_until(alice, "screen_pop")
            assert pop["conversation_id"] == cid
            ctx = pop["context"]
            assert ctx["customer"]["name"] == "Alice Martin" and "identity" in ctx["verified"]
            assert ctx["intent"] == "billing_dispute" and ctx["suggested_next_steps"]
            texts = [line["text"] for line in ctx["transcript"]]
            assert "I want to talk to an agent" in texts and "1985-03-14" not in json.dumps(ctx)
            await no_frame(bob)
            # the hook gives the conversation to the agent who really answered (AMI): his desktop
            # shows it as his, and it is recorded that it was routed to him
            await runner.agent_connected(cid, "bob")
            active = await recv_until(bob, "active")
            assert active["conversation_id"] == cid and active["context"]["handoff"]["agent"] == "bob"
            async with http.get(f"{runner.url}/api/conversations/{cid}/context", headers=bearer("bob")) as resp:
                assert resp.status == 200
            assert runner.parts.metrics.value("voicegw_screenpops_total") == 1
            await runner.agent_connected(cid, "PJSIP/nobody")  # not an account: logged, nothing popped
            await no_frame(alice, 0.3, ignore=("queue",))  # her queue view shows it taken by bob
            await alice.close()
            await bob.close()


async def test_unrouted_screen_pop_is_counted_not_fatal(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession() as http:
            bob = await desk(http, runner.url, "bob", ["support"])
            await transferred(core, "billing")  # bob is available, but billing is not his queue
            assert runner.parts.metrics.value("voicegw_screenpops_unrouted_total") == 1
            await no_frame(bob, 0.3)
            await bob.close()


async def _two_nodes(tmp_path, fanout_a, fanout_b, **overrides) -> None:
    """Node A transfers; the pop reaches alice's desktop on node B; bob reads on B what A routed to him."""
    shared = tmp_path / "shared"  # one data directory (SQLite) or one Redis: the nodes' shared state
    async with real_gateway(shared, deps={"fanout": fanout_a}, **overrides) as (core_a, node_a):
        async with real_gateway(shared, deps={"fanout": fanout_b}, **overrides) as (core_b, node_b):
            async with aiohttp.ClientSession() as http:
                alice = await desk(http, node_b.url, "alice", ["billing"])
                await wait_for_agents(node_a, 1)
                cid = await transferred(core_a, "support")      # transferred on node A
                pop = await recv_until(alice, "screen_pop")      # popped on node B
                assert pop["conversation_id"] == cid and pop["context"]["transcript"]
                await alice.close()
                url = f"{node_b.url}/api/conversations/{cid}/context"
                async with http.get(url, headers=bearer("bob")) as resp:
                    assert resp.status == 403
                await node_a.agent_connected(cid, "bob")  # AMI on node A saw bob answer
                async with http.get(url, headers=bearer("bob")) as resp:
                    assert resp.status == 200
            assert node_b.parts.metrics.value("voicegw_screenpops_total") == 1
            for _ in range(200):
                if not node_a.parts.desktop.registry.agents():
                    break
                await asyncio.sleep(0.05)
            assert not node_a.parts.desktop.registry.agents()  # alice's sign-out reached node A
            reads = [(e.actor, e.action, e.detail["via"]) for e in await node_a.parts.audit.entries(conversation_id=cid)
                     if e.action.startswith("read")]
            assert reads == [("bob", "read", "rest"), ("bob", "read_refused", "rest"), ("alice", "read", "screen-pop")]


async def test_two_nodes_share_screen_pops_in_process(tmp_path):
    hub = InProcessFanout()
    await _two_nodes(tmp_path, hub, hub)
    await hub.close()


async def test_two_nodes_share_screen_pops_and_assignments_through_redis(tmp_path, redis_url):  # noqa: F811
    fanout_a, fanout_b = RedisFanout(redis_url), RedisFanout(redis_url)
    try:
        await _two_nodes(tmp_path, fanout_a, fanout_b, context={"backend": "redis", "redis_url": redis_url})
    finally:
        await fanout_a.close()
        await fanout_b.close()


async def test_unreachable_redis_fanout_does_not_stop_the_desktop(tmp_path, caplog):
    fanout = RedisFanout(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        async with real_gateway(tmp_path, deps={"fanout": fanout}) as (core, runner):
            async with aiohttp.ClientSession() as http:
                alice = await desk(http, runner.url, "alice", ["billing"])
                cid = await transferred(core, "support")
                pop = await recv_until(alice, "screen_pop")  # delivered on this node without Redis
                assert pop["conversation_id"] == cid
                await alice.close()
        assert any("fan-out" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)
    finally:
        await fanout.close()


async def test_bad_desktop_frames_close_that_desktop_only(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        async with aiohttp.ClientSession() as http:
            good = await desk(http, runner.url, "alice", ["billing"])
            bad = await http.ws_connect(f"{runner.url}/agent/ws", headers=bearer("sam"))
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
            big = await http.ws_connect(f"{runner.url}/agent/ws", headers=bearer("sam"))
            await recv_until(big, "queue")
            await big.send_str('{"type":"ready","skills":["' + "x" * 20_000 + '"]}')
            msg = await asyncio.wait_for(big.receive(), TIMEOUT)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and big.close_code == 1009
            cid = await transferred(core, "support")
            assert (await recv_until(good, "screen_pop"))["conversation_id"] == cid
            await good.close()
