"""A gateway node killed in the middle of a call, behind Kamailio, with Redis shared.

One caller verifies on one node (speech, then account and PIN keyed) and that node is killed
(SIGKILL, with every process it started). Asserted: the call on the other node goes on (audio
both ways to the end, the bot still talking after the kill, the caller's own hang-up); new calls
are all answered, by the survivor, within seconds; what the killed node's caller said and proved is in Redis; calling
back from the customer's number resumes the journey on the survivor, which asks for proof again
before any account data (a caller ID is a claim); its transfer waits in the shared queue, and
what the agent's screen-pop shows (the context, read on the survivor) carries what was said on
the dead node.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.agents.queue_store import RedisQueue
from tests.scale.calls import Caller, caller_audio, place, short_call, sipp_log
from tests.scale.conversations import conversation_of, events_of, media_stats, until_kind, until_said
from tests.scale.topology import AGENT_TOKEN, Topology

pytestmark = [pytest.mark.scale, pytest.mark.timeout(300)]

ALICE = "+15551234567"  # the demo CRM's Alice: her phone on file


async def test_a_node_killed_mid_call(topo: Topology, tmp_path: Path) -> None:
    edge = topo.edge.address
    url = topo.redis.url
    victim = Caller("victim", "+15550001111", caller_audio(tmp_path / "victim.ulaw", [
        (11.0, "there is a wrong charge on my bill")], 80), 75, keys=[(21.0, "12345678"), (29.0, "4321")])
    bystander = Caller("bystander", "+15550002222", caller_audio(tmp_path / "bystander.ulaw", [
        (11.0, "where is my order")], 70), 60)
    calls = [place(victim, edge, tmp_path)]
    doomed = await asyncio.to_thread(topo.node_of_call, "victim")
    calls.append(place(bystander, edge, tmp_path))
    survivor = await asyncio.to_thread(topo.node_of_call, "bystander")
    assert survivor is not doomed, "the edge gave two calls in a row to one node (round robin expected)"
    try:
        cid = await conversation_of(url, victim.caller)
        await until_said(url, cid, "Your latest bill", topo)

        doomed.kill()
        killed_at = time.time()

        # new calls: every one answered, by the survivor, within seconds of the kill
        started = time.monotonic()
        fresh = [short_call(tmp_path, edge, f"after-kill-{i}") for i in range(3)]
        for i, proc in enumerate(fresh):
            out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, f'after-kill-{i}')}\n" \
                                         f"{topo.diagnostics()}"
        assert time.monotonic() - started < 2.0 + 6.0  # 2 s calls; failover costs one INVITE timeout (1 s)
        for i in range(3):
            assert await asyncio.to_thread(topo.node_of_call, f"after-kill-{i}") is survivor

        # the call on the other node went on: audio both ways all along, its caller heard after the kill
        out, _ = await asyncio.to_thread(calls[1].communicate, timeout=90)
        assert calls[1].returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'bystander')}\n{topo.diagnostics()}"
        other = await events_of(url, await conversation_of(url, bystander.caller))
        assert any("order" in str(e.payload.get("text", "")).lower() for e in other if e.kind == "UserSaid")
        assert any(e.channel == "bot" and e.at > killed_at + 2 for e in other), [(e.kind, e.at) for e in other]
        assert other[-1].kind == "ChannelClosed" and other[-1].payload["reason"] == "hangup"
        stats = media_stats(survivor, "bystander")
        assert stats["frames_in"] >= 50 * (bystander.seconds - 2), stats
        # a gap of a few frames comes from the loaded 2-core machine (2 in 3000 seen beside other
        # test runs); the kill disturbing the call would cost far more than 0.3 s (15 frames)
        assert stats["underruns"] <= 15, stats

        # what the killed node's caller said and proved is all in Redis
        events = await events_of(url, cid)
        kinds = [e.kind for e in events]
        assert kinds.count("DtmfPressed") == 12
        assert any("wrong charge" in str(e.payload.get("text", "")).lower() for e in events if e.kind == "UserSaid")
        assert any("you're verified" in str(e.payload.get("text", "")) for e in events)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        before_callback = len(events)

        # Alice calls back: the survivor resumes the journey and steps her up before account data
        callback = Caller("callback", ALICE, caller_audio(tmp_path / "callback.ulaw", [
            (13.0, "I want to talk to an agent")], 40), 30)
        calls.append(place(callback, edge, tmp_path))
        assert await asyncio.to_thread(topo.node_of_call, "callback") is survivor
        events = await until_kind(url, cid, "Transfer", topo, after=before_callback)
        after = events[before_callback:]
        assert after[0].kind == "CallStarted" and after[0].payload["caller_id"] == ALICE
        spoken = " | ".join(str(e.payload.get("text", "")) for e in after if e.channel == "bot")
        assert "Welcome back, Alice" in spoken and "confirm it's you" in spoken, spoken
        assert "Your latest bill" not in spoken and "dollars" not in spoken, spoken

        # the agent side: the transfer waits in the shared queue, and what the agent's screen-pop
        # shows (the context, read on the survivor) holds what was said on the dead node
        queue = RedisQueue(url)
        try:
            entry = await queue.get(cid)
        finally:
            await queue.close()
        assert entry is not None and entry.queue == "security" and entry.voice
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{survivor.url}/api/conversations/{cid}/context",
                                headers={"Authorization": f"Bearer {AGENT_TOKEN}"}) as resp:
                assert resp.status == 200, await resp.text()
                context = await resp.json()
        transcript = json.dumps(context["transcript"]).lower()
        assert "wrong charge" in transcript and "your latest bill" in transcript
        assert context["assurance"]["level"] == "claim"  # the call back proved nothing yet
        assert context["verified"] == {}
    finally:
        for proc in calls:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
