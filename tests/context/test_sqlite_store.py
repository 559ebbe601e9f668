"""SQLite-specific behaviour: WAL file layout, schema, corrupt and locked files, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.context import open_store
from gateway.context.sqlite_store import SCHEMA_VERSION, SqliteStore
from gateway.context.store import StoreError


async def test_open_store_creates_the_data_dir_in_wal_mode(tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": str(tmp_path / "nested" / "data")})
    store = open_store(settings)
    try:
        assert isinstance(store, SqliteStore)
        path = tmp_path / "nested" / "data" / "conversations.db"
        assert store.path == path and path.exists()
        await store.create(customer_id="C001")
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert {"conversations_customer", "conversations_caller", "conversations_updated"} <= indexes
            plan = " ".join(str(r) for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT record FROM conversations WHERE customer_id = 'C001' AND "
                "updated_at >= 0 AND status != 'closed' ORDER BY updated_at DESC LIMIT 1"))
            assert "conversations_customer" in plan
    finally:
        await store.close()


async def test_a_restart_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = SqliteStore(path)
    rec = await store.create(customer_id="C001", channel="voice")
    rec.journey, rec.step, rec.slots = "billing", "confirm_dispute", {"invoice_id": "INV-2002"}
    await store.save(rec)
    await store.append(rec.id, channel="voice", kind="UserSaid", payload={"text": "I was charged twice"})
    await store.close()
    reopened = SqliteStore(path)
    try:
        got = await reopened.get(rec.id)
        assert got == rec
        assert [e.payload["text"] for e in await reopened.events(rec.id)] == ["I was charged twice"]
    finally:
        await reopened.close()


async def test_the_event_log_refuses_updates_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = SqliteStore(path)
    rec = await store.create()
    await store.append(rec.id, channel="chat", kind="ChatMessage", payload={"text": "hello"})
    await store.close()
    with sqlite3.connect(path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET payload = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")


def test_a_corrupt_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "conversations.db"
    path.write_bytes(b"this is not a database, just garbage bytes\x00\xff" * 200)
    with pytest.raises(StoreError) as info:
        SqliteStore(path)
    message = str(info.value)
    assert str(path) in message and "corrupt" in message and "move the file aside" in message
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was, for inspection


def test_a_database_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "conversations.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this gateway"):
        SqliteStore(path)


LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE conversations SET status = status")
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until told to let go
    conn.execute("ROLLBACK")
    """
)


async def test_a_locked_database_fails_within_the_busy_timeout_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "conversations.db"
    store = SqliteStore(path, busy_timeout_ms=300)
    rec = await store.create(customer_id="C001")
    await store.append(rec.id, channel="voice", kind="UserSaid", payload={"text": "before"})
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        rec.step = "changed"
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            await store.save(rec)
        waited = time.monotonic() - started
        assert "locked" in str(info.value) and str(path) in str(info.value) and "nothing was written" in str(info.value)
        assert 0.25 <= waited < 30  # waited the busy timeout, then gave up (generous upper bound)
        assert ticks >= 1  # the event loop kept running while the store waited on the lock
        tick_task.cancel()
        assert rec.version == 0  # the record was not marked saved
        with pytest.raises(StoreError, match="locked"):
            await store.append(rec.id, channel="voice", kind="UserSaid", payload={"text": "during"})
        with pytest.raises(StoreError, match="locked"):
            await store.create(customer_id="C002")
        # readers are not blocked in WAL mode: what was committed is still readable
        got = await store.get(rec.id)
        assert got is not None and got.step == "" and got.version == 0
    finally:
        assert holder.stdin is not None
        holder.stdin.write(b"go\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    # once the lock is released, nothing half-written is visible and writing works again
    assert [e.payload["text"] for e in await store.events(rec.id)] == ["before"]
    assert [r.customer_id for r in await store.recent()] == ["C001"]
    await store.save(rec)
    got = await store.get(rec.id)
    assert got is not None and got.step == "changed" and got.version == 1
    await store.close()


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    await store.ping()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get("x")
    with pytest.raises(StoreError, match="closed"):
        await store.ping()
