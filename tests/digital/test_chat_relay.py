"""A chat follow-up emitted on one gateway node reaches the customer's chat on another node
(through the fan-out), once; with no chat open anywhere it waits for the customer's return."""

from __future__ import annotations

import asyncio

import aiohttp

from gateway.context.fanout import InProcessFanout
from gateway.core.events import ChatMessage
from tests.digital.fake_core import FakeCore
from tests.digital.helpers import recv_until, start


async def test_followup_reaches_chat_on_another_node(tmp_path):
    hub = InProcessFanout()
    core_a, core_b = FakeCore(), FakeCore()
    core_b.conversations = core_a.conversations  # the shared context store of two nodes
    node_a = await start(tmp_path / "a", core_a, deps={"fanout": hub})
    node_b = await start(tmp_path / "b", core_b, deps={"fanout": hub})
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(node_b.url + "/chat/ws") as ws:
            cid = (await recv_until(ws, "session"))["conversation_id"]
            await recv_until(ws, "ask")
            # the same conversation asks for a chat follow-up on node A (a call handled there)
            await core_a.handle(cid, ChatMessage(text="send me a link", channel="chat"))
            followup = await recv_until(ws, "followup")
            assert followup["url"].startswith(node_a.url + "/l/")
            for _ in range(100):  # node A drops its kept copy once node B says delivered
                if not node_a.parts.chat._pending:
                    break
                await asyncio.sleep(0.05)
            assert not node_a.parts.chat._pending
        # no chat open anywhere: kept on node A and delivered when the customer returns there
        await core_a.handle(cid, ChatMessage(text="another link please", channel="chat"))
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{node_a.url}/chat/ws?c="
                                       + node_a.parts.followups.link_for(cid, "chat").split("c=")[1]) as ws:
                assert (await recv_until(ws, "session"))["conversation_id"] == cid
                assert (await recv_until(ws, "followup"))["text"] == "Upload your document:"
    finally:
        await node_a.close()
        await node_b.close()
        await hub.close()
