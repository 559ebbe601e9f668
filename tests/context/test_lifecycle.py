"""Store-wide operations on both backends (a real SQLite file, a real Redis): the feed in one
global order, scans, and the one guarded way around the append-only log (erasure, retention)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import redis as syncredis

from gateway.context.lifecycle import EXPIRED, Cutoffs
from gateway.context.redis_store import RedisStore
from gateway.context.sqlite_store import SCHEMA_VERSION, SqliteStore
from tests.redis_server import redis_server, redis_url, stored_bytes  # noqa: F401  (pytest fixtures)

DAY = 86400.0
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Backend:
    def __init__(self, name: str, store: Any, clock: Clock, raw: Any) -> None:
        self.name, self.store, self.clock, self.raw = name, store, clock, raw


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = Clock()
    if request.param == "sqlite":
        path = tmp_path / "conversations.db"
        store: Any = SqliteStore(path, clock=clock)

        def raw() -> bytes:
            return b"".join(p.read_bytes() for p in tmp_path.glob("conversations.db*"))
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisStore(url, prefix=f"t{uuid.uuid4().hex[:6]}:", clock=clock, feed_max_len=10_000)
        client = syncredis.Redis.from_url(url)

        def raw() -> bytes:
            out = []
            for key in client.scan_iter(match=store.prefix + "*"):
                out.append(key + b"=" + stored_bytes(client, key))
            return b"".join(out)
    yield Backend(request.param, store, clock, raw)
    await store.close()


async def _conversation(b: Backend, customer: str, caller: str, words: list[str]) -> str:
    record = await b.store.create(customer_id=customer, caller_id=caller, channel="chat")
    for text in words:
        b.clock.now += 1
        await b.store.append(record.id, channel="chat", kind="ChatMessage", payload={"text": text})
        await b.store.append(record.id, channel="bot", kind="Ask", payload={"text": "And then?", "prompt_id": "x"})
    record = await b.store.get(record.id)
    assert record is not None
    record.slots["customer_name"] = f"Name of {customer}"
    await b.store.save(record)
    return record.id


async def test_the_feed_holds_every_event_in_one_order_and_reads_on_from_a_position(backend: Backend) -> None:
    a = await _conversation(backend, "C1", "+15550001111", ["one", "two"])
    b = await _conversation(backend, "C2", "+15550002222", ["three"])
    entries = await backend.store.feed("", limit=100)
    assert [(e.event.conversation_id, e.event.seq) for e in entries] == [(a, 1), (a, 2), (a, 3), (a, 4), (b, 1), (b, 2)]
    assert entries[0].event.payload == {"text": "one"}
    assert len({e.position for e in entries}) == 6
    assert await backend.store.feed_head() == entries[-1].position
    rest = await backend.store.feed(entries[3].position, limit=100)
    assert [(e.event.conversation_id, e.event.seq) for e in rest] == [(b, 1), (b, 2)]
    assert await backend.store.feed(entries[-1].position) == []
    two = await backend.store.feed("", limit=2)
    assert [e.position for e in two] == [e.position for e in entries[:2]]


async def test_scans_find_conversations_by_time_and_by_customer(backend: Backend) -> None:
    a = await _conversation(backend, "C1", "+15550001111", ["hello"])
    backend.clock.now += DAY
    b = await _conversation(backend, "C2", "+15550002222", ["hello"])
    c = await _conversation(backend, "", "+15550001111", ["hello"])
    found = await backend.store.conversations_between(T0 + DAY / 2, T0 + 2 * DAY)
    assert [r.id for r in found] == [b, c]
    assert [r.id for r in await backend.store.conversations_between(0, T0 + 3 * DAY, limit=1)] == [a]
    assert set(await backend.store.conversation_ids(customer_id="C1")) == {a}
    assert set(await backend.store.conversation_ids(customer_id="C1", caller_ids=["+15550001111"])) == {a, c}
    assert await backend.store.conversation_ids(customer_id="nobody") == []


async def test_erasure_removes_conversations_whole_and_nothing_else(backend: Backend) -> None:
    a = await _conversation(backend, "C1", "+15550001111", ["my parcel to Quillfeather Lane"])
    b = await _conversation(backend, "C2", "+15550002222", ["hello"])
    assert b"Quillfeather" in backend.raw()
    counts = await backend.store.erase_conversations([a], actor="admin", reason="erasure request")
    assert counts.as_dict() == {"conversations": 1, "events": 2, "feed": 2}
    assert await backend.store.get(a) is None and await backend.store.events(a) == []
    assert await backend.store.conversation_ids(customer_id="C1") == []
    assert [e.event.conversation_id for e in await backend.store.feed("")] == [b, b]
    assert (await backend.store.get(b)) is not None and len(await backend.store.events(b)) == 2
    raw = backend.raw()
    for needle in (b"Quillfeather", a.encode(), b"Name of C1", b"+15550001111"):
        assert needle not in raw, needle
    # the log goes on for the others, with sequence numbers and positions as before
    await backend.store.append(b, channel="chat", kind="ChatMessage", payload={"text": "still here"})
    assert (await backend.store.events(b))[-1].seq == 3


async def test_retention_strips_transcripts_clears_slots_and_drops_old_conversations(backend: Backend) -> None:
    old = await _conversation(backend, "C1", "+15550001111", ["my name is Ottoline"])
    backend.clock.now += 40 * DAY
    middle = await _conversation(backend, "C2", "+15550002222", ["call me on +15559998888"])
    backend.clock.now += 20 * DAY
    fresh = await _conversation(backend, "C3", "", ["hello"])
    now = backend.clock.now
    counts = await backend.store.expire(Cutoffs(conversations=now - 50 * DAY, transcripts=now - 10 * DAY,
                                                slots=now - 10 * DAY), actor="retention")
    feed = {"sqlite": 2, "redis": 4}[backend.name]  # Redis drops the stream's copies of stripped events too
    assert counts.as_dict() == {"conversations": 1, "events": 2, "feed": feed, "slots": 1, "transcript_events": 2}
    assert await backend.store.get(old) is None
    events = await backend.store.events(middle)
    assert [e.payload["text"] for e in events] == [EXPIRED, EXPIRED] and events[1].payload["prompt_id"] == "x"
    record = await backend.store.get(middle)
    assert record is not None and record.slots == {} and record.customer_id == "C2"
    assert (await backend.store.get(fresh)).slots == {"customer_name": "Name of C3"}  # type: ignore[union-attr]
    raw = backend.raw()
    assert b"Ottoline" not in raw and b"+15559998888" not in raw
    again = await backend.store.expire(Cutoffs(conversations=now - 50 * DAY, transcripts=now - 10 * DAY,
                                               slots=now - 10 * DAY), actor="retention")
    assert again.as_dict() == {}


async def test_sqlite_keeps_refusing_writes_to_the_log_outside_a_purge(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    record = await store.create(customer_id="C1")
    await store.append(record.id, channel="chat", kind="ChatMessage", payload={"text": "hi"})
    await store.erase_conversations(["nothing-such"], actor="admin", reason="test")
    await store.close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        for sql in ("UPDATE events SET payload = '{}'", "DELETE FROM events"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
        assert conn.execute("SELECT COUNT(*) FROM purge_guard").fetchone()[0] == 0
        actor, reason, counts = conn.execute("SELECT actor, reason, counts FROM purges").fetchone()
        assert (actor, reason, json.loads(counts)) == ("admin", "test", {})


async def test_a_version_1_database_gets_its_feed_filled_in_order(tmp_path: Path) -> None:
    from gateway.context.sqlite_store import _MIGRATIONS
    from gateway.sqlite_tx import run_script

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        run_script(conn, _MIGRATIONS[1])
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO conversations (id, created_at, updated_at, record) VALUES ('c1', 1, 3, ?)",
                     (json.dumps({"id": "c1", "created_at": 1, "updated_at": 3}),))
        for seq, at in ((1, 1.0), (2, 2.0)):
            conn.execute("INSERT INTO events VALUES ('c1', ?, ?, 'chat', 'ChatMessage', '{}')", (seq, at))
    store = SqliteStore(path)
    try:
        assert [(e.position, e.event.seq) for e in await store.feed("")] == [("1", 1), ("2", 2)]
        await store.append("c1", channel="chat", kind="ChatMessage", payload={})
        assert await store.feed_head() == "3"
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
