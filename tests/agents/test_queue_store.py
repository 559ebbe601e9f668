"""The queue's rules applied by both stores: SQLite (two connections, as two nodes sharing a data
directory) and a real Redis (two clients, as two nodes). Claims are atomic: when many agents take
the same entry at once, exactly one wins and the others are told who."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest

from gateway.agents import queue as q
from gateway.agents.queue import QueueEntry
from gateway.agents.queue_store import RedisQueue, SqliteQueue
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)


@pytest.fixture(params=["sqlite", "redis"])
async def stores(request, tmp_path: Path) -> AsyncIterator[tuple[object, object]]:
    """Two handles on one queue, as two gateway nodes hold them."""
    if request.param == "sqlite":
        a, b = SqliteQueue(tmp_path / "queue.db"), SqliteQueue(tmp_path / "queue.db")
    else:
        url = request.getfixturevalue("redis_url")
        a, b = RedisQueue(url), RedisQueue(url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def entry(cid: str, since: float, queue: str = "billing", channel: str = "chat") -> QueueEntry:
    return QueueEntry(conversation_id=cid, queue=queue, since=since, channel=channel, reason="asked", intent="x")


async def test_longest_waiting_first_and_a_place_is_kept(stores):
    a, b = stores
    await a.apply("c2", q.enqueue(entry("c2", 200.0)))
    await b.apply("c1", q.enqueue(entry("c1", 100.0)))
    assert [e.conversation_id for e in await a.entries()] == ["c1", "c2"]
    # a second transfer of the same conversation keeps its place in line
    await a.apply("c1", q.enqueue(entry("c1", 300.0, queue="support")))
    got = await b.get("c1")
    assert got is not None and got.since == 100.0 and got.queue == "support"


async def test_one_offer_at_a_time_and_a_lapsed_offer_goes_to_the_next(stores):
    a, b = stores
    await a.apply("c1", q.enqueue(entry("c1", 100.0)))
    assert (await a.apply("c1", q.offer("alice", 110.0, 130.0))).ok
    refused = await b.apply("c1", q.offer("bob", 111.0, 131.0))
    assert not refused.ok and refused.why == "offered" and refused.entry.offered_to == "alice"
    assert (await b.apply("c1", q.lapse("alice", 131.0))).ok
    assert not (await a.apply("c1", q.offer("alice", 132.0, 150.0))).ok  # she let it lapse
    assert (await b.apply("c1", q.offer("bob", 132.0, 150.0))).ok
    await b.apply("c1", q.lapse("bob", 151.0))
    await a.apply("c1", q.forgive())
    assert (await a.apply("c1", q.offer("alice", 152.0, 170.0))).ok
    # a voice entry waits in the PBX's queue: never offered
    await a.apply("v1", q.enqueue(entry("v1", 90.0, channel="voice")))
    assert (await a.apply("v1", q.offer("alice", 152.0, 170.0))).why == "voice"


async def test_only_one_of_many_simultaneous_claims_wins(stores):
    a, b = stores
    await a.apply("c1", q.enqueue(entry("c1", 100.0)))
    agents = [f"agent{i}" for i in range(12)]
    outcomes = await asyncio.gather(*[(a if i % 2 else b).apply("c1", q.claim(name, 120.0, 150.0))
                                      for i, name in enumerate(agents)])
    winners = [name for name, o in zip(agents, outcomes) if o.ok]
    assert len(winners) == 1
    holder = (await a.get("c1")).taken_by
    assert holder == winners[0]
    for name, o in zip(agents, outcomes):
        if not o.ok:
            assert o.why == "taken" and o.entry.taken_by == holder
    # the holder claiming again (a second desktop tab) keeps it
    assert (await b.apply("c1", q.claim(holder, 125.0, 160.0))).ok


async def test_a_lapsed_lease_puts_it_back_first_in_line(stores):
    a, b = stores
    await a.apply("c1", q.enqueue(entry("c1", 100.0)))
    await a.apply("c2", q.enqueue(entry("c2", 150.0)))
    await a.apply("c1", q.claim("alice", 160.0, 190.0))
    assert not (await b.apply("c1", q.release_lapsed(180.0))).ok  # still renewed in time
    await a.apply("c1", q.renew("alice", 220.0))
    assert not (await b.apply("c1", q.release_lapsed(200.0))).ok
    dropped = await b.apply("c1", q.release_lapsed(221.0))
    assert dropped.ok and dropped.entry.taken_by == "alice"
    back = await a.get("c1")
    assert back.taken_by == "" and back.since == 100.0
    assert [e.conversation_id for e in await a.entries()] == ["c1", "c2"]


async def test_waits_and_removal(stores):
    a, b = stores
    for seconds in (10.0, 30.0, 20.0):
        await a.record_wait("billing", seconds)
    assert (await b.waits("billing")).typical() == 20.0
    assert (await b.waits("orders")).typical() is None
    await a.apply("c1", q.enqueue(entry("c1", 100.0)))
    await a.apply("c1", q.claim("alice", 110.0, 140.0))
    assert not (await b.apply("c1", q.remove(holder="bob"))).ok
    assert (await b.apply("c1", q.remove(holder="alice"))).ok
    assert await a.get("c1") is None and await a.entries() == []
