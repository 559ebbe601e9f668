"""Two gateway nodes on one real Redis: the customer's chat socket is on node B, the agent's
desktop on node A. The queue, the offer, the live feed and the receipts cross between them: the
agent serves the chat held by the other node, both ways, and hands it back."""

from __future__ import annotations

import aiohttp

from gateway.context.fanout import RedisFanout
from tests.agents.helpers import jar, real_gateway
from tests.agents.test_live_chat import agent_desk, customer, recv_all, say
from tests.digital.helpers import recv_until
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)

FAST = {"offer_seconds": 5.0, "reconnect_grace_seconds": 3.0, "dispatch_seconds": 0.2}


async def test_an_agent_on_one_node_serves_a_chat_held_by_the_other(tmp_path, redis_url):  # noqa: F811
    fanout_a, fanout_b = RedisFanout(redis_url), RedisFanout(redis_url)
    shared = {"context": {"backend": "redis", "redis_url": redis_url}, "agents": FAST,
              "links": {"secret": "one-secret-for-both-nodes-0123456789abcdef"}}
    try:
        async with real_gateway(tmp_path / "a", deps={"fanout": fanout_a}, **shared) as (core_a, node_a), \
                real_gateway(tmp_path / "b", deps={"fanout": fanout_b}, **shared) as (core_b, node_b):
            async with aiohttp.ClientSession(cookie_jar=jar()) as http, aiohttp.ClientSession() as desks:
                chat, cid = await customer(http, node_b.url)  # the chat lives on node B
                await recv_until(chat, "ask")
                place = (await say(chat, "I want to talk to an agent", until="queue"))[-1]
                assert place["position"] == 1
                alice = await agent_desk(desks, node_a.url, "alice")  # the desktop on node A
                pop = await recv_until(alice, "screen_pop")
                assert pop["conversation_id"] == cid
                await alice.send_json({"type": "accept", "conversation_id": cid})
                await recv_until(alice, "active")
                assert (await recv_until(chat, "agent_joined"))["name"] == "alice"
                await alice.send_json({"type": "send", "conversation_id": cid, "text": "Hello from node A",
                                       "id": "a-1"})
                assert (await recv_until(chat, "agent_message"))["text"] == "Hello from node A"
                receipts = await recv_all(alice, "sent", "delivered")  # delivered: node B's chat had it
                assert receipts["delivered"]["id"] == "a-1"
                await chat.send_json({"type": "typing"})
                await recv_until(alice, "typing")
                await chat.send_json({"type": "message", "text": "Hello from node B", "id": "b-1"})
                lines = await recv_until(alice, "lines")
                assert [l["text"] for l in lines["lines"]] == ["Hello from node B"]
                assert (await recv_all(chat, "seen"))["seen"]["id"] == "b-1"
                await alice.send_json({"type": "hand_back", "conversation_id": cid, "journey": "welcome",
                                       "step": "how_help"})
                assert (await recv_until(chat, "agent_left"))["reason"] == "handed_back"
                assert "How can I help you" in (await recv_until(chat, "ask"))["text"]
                await chat.close()
                await alice.close()
            # both nodes' queue handles see the same (now empty) queue
            assert await node_a.parts.human.queue.get(cid) is None
            assert await node_b.parts.human.queue.get(cid) is None
            assert node_a.parts.human.hub.stats.failed == 0 and node_b.parts.human.hub.stats.failed == 0
    finally:
        await fanout_a.close()
        await fanout_b.close()
