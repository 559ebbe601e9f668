"""A chat follow-up emitted on one gateway node reaches the customer's chat on another node
(through the fan-out), once; with no chat open anywhere it waits for the customer's return.
Two real cores share one context store (a SQLite file both nodes open, as Redis would be)."""

from __future__ import annotations

import asyncio

import aiohttp

from gateway.context.fanout import InProcessFanout
from gateway.core.events import ChatMessage
from gateway.core.orchestrator import Orchestrator
from tests.digital.helpers import real_gateway, recv_until

TRACKING = ("where is my order", "2 0 0 0 1", "yes")
"""What the customer says for the order journey to push the tracking link into the chat."""


async def _ask_for_tracking(core: Orchestrator, cid: str) -> None:
    for text in TRACKING:
        await core.handle(cid, ChatMessage(text=text, channel="chat"))


async def test_followup_reaches_chat_on_another_node(tmp_path):
    hub = InProcessFanout()
    shared = {"context": {"sqlite_path": str(tmp_path / "shared-conversations.db")}, "deps": {"fanout": hub}}
    try:
        async with real_gateway(tmp_path / "a", **dict(shared)) as (core_a, node_a), \
                real_gateway(tmp_path / "b", **dict(shared)) as (core_b, node_b):
            async with aiohttp.ClientSession() as http, http.ws_connect(node_b.url + "/chat/ws") as ws:
                cid = (await recv_until(ws, "session"))["conversation_id"]
                await recv_until(ws, "ask")
                # the same conversation asks for a chat follow-up on node A
                await _ask_for_tracking(core_a, cid)
                followup = await recv_until(ws, "followup")
                assert followup["url"].startswith(node_a.url + "/l/") and "Your order 20001" in followup["text"]
                for _ in range(100):  # node A drops its kept copy once node B says delivered
                    if not node_a.parts.chat._pending:
                        break
                    await asyncio.sleep(0.05)
                assert not node_a.parts.chat._pending
            # no chat open anywhere: kept on node A and delivered when the customer returns there
            await _ask_for_tracking(core_a, cid)
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(f"{node_a.url}/chat/ws?c="
                                           + node_a.parts.followups.link_for(cid, "chat").split("c=")[1]) as ws:
                    assert (await recv_until(ws, "session"))["conversation_id"] == cid
                    again = await recv_until(ws, "followup")
                    assert again["url"].startswith(node_a.url + "/l/") and again["url"] != followup["url"]
            assert (await core_b.context(cid))["conversation_id"] == cid  # one conversation, both nodes
    finally:
        await hub.close()
