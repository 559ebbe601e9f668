"""Redis stopped and started again in the middle of a journey, behind Kamailio.

A caller on one node has given speech and an account number when redis-server stops; a web chat
on the same node is waiting for an order number. During the outage the caller keys a PIN and the
chat customer types the number: both are answered from the node's own copy of their
conversations (the PIN check cannot read the shared lockout counter, so it refuses and hands the
caller to a person, as docs/trust.md requires). When redis-server starts again, every event of
both conversations is in Redis once, in order, the call ends normally, and the chat reconnects
to the same conversation.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.context.redis_store import RedisStore
from tests.scale.calls import Caller, caller_audio, place, sipp_log
from tests.scale.conversations import conversation_of, events_of, until_kind, until_said
from tests.scale.topology import Topology

pytestmark = [pytest.mark.scale, pytest.mark.timeout(300)]


async def _recv(ws: aiohttp.ClientWebSocketResponse, kind: str, seen: list | None = None) -> dict:
    from tests.digital.helpers import recv_until

    return await recv_until(ws, kind, seen, timeout=30)


async def _uids(url: str, cid: str) -> list[str]:
    store = RedisStore(url)
    try:
        return [json.loads(item)["uid"] for item in await store._redis.lrange(f"voicegw:events:{cid}", 0, -1)]
    finally:
        await store.close()


async def test_redis_stopped_and_started_mid_journey(topo: Topology, tmp_path: Path) -> None:
    url, edge = topo.redis.url, topo.edge.address
    caller = Caller("outage", "+15550003333", caller_audio(tmp_path / "outage.ulaw", [
        (11.0, "there is a wrong charge on my bill")], 80), 50, keys=[(21.0, "12345678"), (29.0, "4321")])
    call = place(caller, edge, tmp_path)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        node = await asyncio.to_thread(topo.node_of_call, "outage")
        cid = await conversation_of(url, caller.caller)
        chat = await http.ws_connect(f"{node.url}/chat/ws")
        chat_cid = (await _recv(chat, "session"))["conversation_id"]
        await _recv(chat, "ask")
        await chat.send_json({"type": "message", "text": "where is my order"})
        assert "order number" in (await _recv(chat, "ask"))["text"]
        await until_said(url, cid, "four digit PIN", topo)  # the call has reached the PIN question

        topo.redis.stop()
        # the chat goes on: the order number typed during the outage is looked up and answered
        seen: list = []
        await chat.send_json({"type": "message", "text": "20001"})
        await _recv(chat, "ask", seen)
        answer = " ".join(f.get("text", "") for f in seen).lower()
        assert "standing desk" in answer or "delayed" in answer, seen
        # the call goes on: the PIN keyed during the outage is refused (the lockout cannot be
        # checked) and the caller is handed to a person, with the reason said
        deadline = time.monotonic() + 40
        while "transfer to support" not in node.log():
            assert time.monotonic() < deadline, topo.diagnostics()
            await asyncio.sleep(0.3)

        topo.redis.start()
        events = await until_kind(url, cid, "Transfer", topo, after=0)
        out, _ = await asyncio.to_thread(call.communicate, timeout=90)
        assert call.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'outage')}\n{topo.diagnostics()}"
        events = await until_kind(url, cid, "ChannelClosed", topo, after=0)

        # every event once, in order
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        uids = await _uids(url, cid)
        assert len(uids) == len(set(uids)) == len(events)
        kinds = [e.kind for e in events]
        assert kinds.count("DtmfPressed") == 12 and kinds[-1] == "ChannelClosed"
        assert [e.payload["digit"] for e in events if e.kind == "DtmfPressed"][8:] == ["[redacted]"] * 4
        spoken = " | ".join(str(e.payload.get("text", "")) for e in events if e.channel == "bot")
        assert "not responding" in spoken and "verified" not in spoken, spoken
        transfer = next(e for e in events if e.kind == "Transfer")
        assert transfer.payload["reason"] == "customer records unavailable"
        store = RedisStore(url)
        try:
            record = await store.get(cid)
        finally:
            await store.close()
        assert record is not None and not record.verified
        if "TransferFailed" in kinds:
            # the node has no sip.transfer_uri: its REFER is never sent, the core hears so and keeps
            # the caller until they hang up (docs/trust.md, "Telephony failures end with people")
            assert kinds.index("TransferFailed") > kinds.index("Transfer")
            assert record.status == "active" and record.state.transfer_failures == 1
        else:  # the caller hung up before the failed transfer reached the core
            assert record.status == "transferred" and record.state.transfer_failures == 0

        chat_events = await events_of(url, chat_cid)
        assert [e.seq for e in chat_events] == list(range(1, len(chat_events) + 1))
        assert "20001" in [e.payload.get("text") for e in chat_events if e.kind == "ChatMessage"]
        assert "Redis context store back" in node.log() and "0 conflicts" in node.log()

        # the chat reconnects (its cookie) to the same conversation, which goes on
        await chat.close()
        chat = await http.ws_connect(f"{node.url}/chat/ws")
        session = await _recv(chat, "session")
        assert session["conversation_id"] == chat_cid and session["resumed"]
        await chat.close()
    finally:
        await http.close()
        if call.poll() is None:
            call.kill()
            call.wait(timeout=10)
