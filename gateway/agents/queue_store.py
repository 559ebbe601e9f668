"""Where the queue lives, shared by every gateway node: SQLite beside the context store, or Redis.

Both apply a :data:`~gateway.agents.queue.Transition` atomically:

- SQLite (``<data_dir>/queue.db``): read, change and write in one ``BEGIN IMMEDIATE``
  transaction on one worker thread (a locked file never stalls the event loop);
- Redis: ``{p}queue:entry:{id}`` holds each entry as JSON and ``{p}queue:ids`` their ids; a
  transition runs under WATCH/MULTI on the entry's key and is retried when another node changed
  it in between, so two nodes never both win a claim.

Recent waits per queue (for the customer's expected wait) are a short list in the same store.
Every call is bounded (SQLite busy timeout, Redis socket timeout) and fails with
:class:`~gateway.context.store.StoreError`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from gateway.agents.queue import Outcome, QueueEntry, Transition, Waits
from gateway.config import Settings
from gateway.context.store import StoreError
from gateway.sqlite_tx import write

T = TypeVar("T")

QUEUE_FILE = "queue.db"
MAX_ENTRIES = 10_000
"""Entries one read returns at most: a queue longer than this is an outage, not a queue."""
WAITS_KEPT = 20
"""Recent waits kept per queue for the expected-wait estimate."""
REDIS_RETRIES = 8
"""Attempts of one transition when other nodes keep changing the same entry."""


class QueueStore(Protocol):
    async def apply(self, conversation_id: str, transition: Transition) -> Outcome:
        """Apply ``transition`` to the entry of ``conversation_id`` atomically."""
        ...

    async def get(self, conversation_id: str) -> QueueEntry | None: ...

    async def entries(self) -> list[QueueEntry]:
        """Every entry, longest waiting first."""
        ...

    async def record_wait(self, queue: str, seconds: float) -> None: ...

    async def waits(self, queue: str) -> Waits: ...

    async def close(self) -> None: ...


class SqliteQueue:
    """:class:`QueueStore` in a SQLite file (one node, or nodes sharing one data directory)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-sqlite")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS queue (conversation_id TEXT PRIMARY KEY,"
                               " since REAL NOT NULL, entry TEXT NOT NULL) WITHOUT ROWID")
            self._conn.execute("CREATE INDEX IF NOT EXISTS queue_since ON queue (since)")
            self._conn.execute("CREATE TABLE IF NOT EXISTS waits (queue TEXT NOT NULL, at REAL NOT NULL,"
                               " seconds REAL NOT NULL)")
            self._conn.execute("CREATE INDEX IF NOT EXISTS waits_queue ON waits (queue, at)")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the agent queue {path}: {exc}; move the file aside and restart") from exc

    async def _run(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"agent queue {self.path} is closed")

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"agent queue {self.path}: {exc} while {doing}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def apply(self, conversation_id: str, transition: Transition) -> Outcome:
        def change(conn: sqlite3.Connection) -> Outcome:
            row = conn.execute("SELECT entry FROM queue WHERE conversation_id = ?", (conversation_id,)).fetchone()
            before = QueueEntry.loads(row[0]) if row else None
            after, outcome = transition(before)
            if after == before:
                return outcome
            if after is None:
                conn.execute("DELETE FROM queue WHERE conversation_id = ?", (conversation_id,))
            else:
                conn.execute("INSERT INTO queue (conversation_id, since, entry) VALUES (?, ?, ?) ON CONFLICT"
                             " (conversation_id) DO UPDATE SET since = excluded.since, entry = excluded.entry",
                             (conversation_id, after.since, after.dumps()))
            return outcome

        return await self._run("changing an entry", lambda conn: write(conn, change))

    async def get(self, conversation_id: str) -> QueueEntry | None:
        row = await self._run("reading an entry", lambda conn: conn.execute(
            "SELECT entry FROM queue WHERE conversation_id = ?", (conversation_id,)).fetchone())
        return QueueEntry.loads(row[0]) if row else None

    async def entries(self) -> list[QueueEntry]:
        rows = await self._run("listing the queue", lambda conn: conn.execute(
            "SELECT entry FROM queue ORDER BY since LIMIT ?", (MAX_ENTRIES,)).fetchall())
        return [QueueEntry.loads(r[0]) for r in rows]

    async def record_wait(self, queue: str, seconds: float) -> None:
        def add(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO waits (queue, at, seconds) VALUES (?, ?, ?)", (queue, time.time(), seconds))
            conn.execute("DELETE FROM waits WHERE queue = ? AND at < (SELECT at FROM waits WHERE queue = ?"
                         " ORDER BY at DESC LIMIT 1 OFFSET ?)", (queue, queue, WAITS_KEPT - 1))

        await self._run("recording a wait", lambda conn: write(conn, add))

    async def waits(self, queue: str) -> Waits:
        rows = await self._run("reading waits", lambda conn: conn.execute(
            "SELECT seconds FROM waits WHERE queue = ? ORDER BY at DESC LIMIT ?", (queue, WAITS_KEPT)).fetchall())
        return Waits(tuple(float(r[0]) for r in rows))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


class RedisQueue:
    """:class:`QueueStore` in Redis, shared by every node on it."""

    def __init__(self, url: str, *, prefix: str = "voicegw:") -> None:
        from gateway.context.redis_store import connect

        self.url = url
        self._prefix = prefix
        self._redis = connect(url)

    def _entry_key(self, conversation_id: str) -> str:
        return f"{self._prefix}queue:entry:{conversation_id}"

    async def _call(self, doing: str, op: Awaitable[T]) -> T:
        from redis.exceptions import RedisError

        from gateway.context.redis_store import safe_url

        try:
            return await op
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis agent queue at {safe_url(self.url)} failed while {doing}: {exc}") from exc

    async def apply(self, conversation_id: str, transition: Transition) -> Outcome:
        from redis.exceptions import WatchError

        key, ids = self._entry_key(conversation_id), f"{self._prefix}queue:ids"

        async def attempt() -> Outcome:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                text = await pipe.get(key)
                before = QueueEntry.loads(text) if text else None
                after, outcome = transition(before)
                if after == before:
                    await pipe.unwatch()
                    return outcome
                pipe.multi()
                if after is None:
                    pipe.delete(key)
                    pipe.zrem(ids, conversation_id)
                else:
                    pipe.set(key, after.dumps())
                    pipe.zadd(ids, {conversation_id: after.since})
                await pipe.execute()
                return outcome

        for _ in range(REDIS_RETRIES):
            try:
                return await self._call("changing an entry", attempt())
            except WatchError:
                continue
        raise StoreError(f"agent queue entry {conversation_id} kept changing under {REDIS_RETRIES} attempts")

    async def get(self, conversation_id: str) -> QueueEntry | None:
        text = await self._call("reading an entry", self._redis.get(self._entry_key(conversation_id)))
        return QueueEntry.loads(text) if text else None

    async def entries(self) -> list[QueueEntry]:
        ids: list[str] = await self._call("listing the queue", self._redis.zrange(
            f"{self._prefix}queue:ids", 0, MAX_ENTRIES - 1))
        if not ids:
            return []
        texts = await self._call("listing the queue", self._redis.mget([self._entry_key(i) for i in ids]))
        return [QueueEntry.loads(t) for t in texts if t]

    async def record_wait(self, queue: str, seconds: float) -> None:
        key = f"{self._prefix}queue:waits:{queue}"

        async def op() -> Any:
            pipe = self._redis.pipeline(transaction=True)
            pipe.lpush(key, repr(seconds))
            pipe.ltrim(key, 0, WAITS_KEPT - 1)
            return await pipe.execute()

        await self._call("recording a wait", op())

    async def waits(self, queue: str) -> Waits:
        items = await self._call("reading waits", self._redis.lrange(f"{self._prefix}queue:waits:{queue}", 0,
                                                                     WAITS_KEPT - 1))
        return Waits(tuple(float(i) for i in items))

    async def close(self) -> None:
        await self._redis.aclose()


def open_queue(settings: Settings) -> QueueStore:
    """The queue beside the configured context store."""
    if settings.context.backend == "redis":
        return RedisQueue(settings.context.redis_url)
    return SqliteQueue(settings.data_path(QUEUE_FILE))
