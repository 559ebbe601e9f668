"""Windowed counters and locks shared by every gateway node: failed identity checks per
customer, outbound calls and SMS per conversation and per gateway.

A counter key holds the times of its hits; only hits inside the asked window count, so a
counter needs no reset job. A lock key holds a time until which it is set. Two backends, chosen
like the context store (``context.backend``):

- SQLite: a small file in the data directory (one node; the embedded default);
- Redis: a sorted set per counter and a key with an expiry per lock, updated by Lua scripts so
  that "count, then add if below the limit" is one atomic step on every node.

Every call is bounded (SQLite busy timeout, Redis socket timeout). A backend that cannot answer
raises :class:`~gateway.context.store.StoreError`; callers decide whether to fail closed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Protocol

from gateway.context.store import StoreError

MAX_HITS_PER_KEY = 1000
"""Hits kept per counter; older ones are dropped (every limit in the gateway is far below)."""

COUNTERS_FILE = "counters.db"


class Counters(Protocol):
    async def hit(self, key: str, *, window_seconds: float) -> int:
        """Record one hit; the number of hits inside the window, this one included."""
        ...

    async def take(self, key: str, *, limit: int, window_seconds: float) -> bool:
        """Record one hit only if fewer than ``limit`` are inside the window; True when recorded."""
        ...

    async def count(self, key: str, *, window_seconds: float) -> int:
        """Hits inside the window (nothing recorded)."""
        ...

    async def clear(self, key: str) -> None:
        """Forget every hit of ``key``."""
        ...

    async def lock(self, key: str, until: float) -> None:
        """Set the lock ``key`` until the epoch time ``until``."""
        ...

    async def locked_until(self, key: str) -> float:
        """The epoch time the lock holds until, or 0.0 when it is not set."""
        ...

    async def close(self) -> None:
        ...


class SqliteCounters:
    """:class:`Counters` in a SQLite file (one gateway node)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                       timeout=busy_timeout_ms / 1000)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS hits (key TEXT NOT NULL, at REAL NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS hits_key ON hits (key, at)")
            self._db.execute("CREATE TABLE IF NOT EXISTS locks (key TEXT PRIMARY KEY, until REAL NOT NULL)")
        except sqlite3.Error as exc:
            raise StoreError(f"counters file {path} cannot be opened: {exc}") from exc
        self._path = path
        self._lock = threading.Lock()

    async def _run(self, fn: Callable[[sqlite3.Connection, float], object]) -> object:
        now = self.clock()

        def work() -> object:
            with self._lock:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(self._db, now)
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("COMMIT")
                    return result
                except sqlite3.Error as exc:
                    raise StoreError(f"counters file {self._path}: {exc}") from exc

        return await asyncio.to_thread(work)

    @staticmethod
    def _inside(db: sqlite3.Connection, key: str, since: float) -> int:
        return int(db.execute("SELECT COUNT(*) FROM hits WHERE key = ? AND at > ?", (key, since)).fetchone()[0])

    @staticmethod
    def _add(db: sqlite3.Connection, key: str, now: float) -> None:
        db.execute("INSERT INTO hits (key, at) VALUES (?, ?)", (key, now))
        db.execute("DELETE FROM hits WHERE key = ? AND at <= (SELECT at FROM hits WHERE key = ? "
                   "ORDER BY at DESC LIMIT 1 OFFSET ?)", (key, key, MAX_HITS_PER_KEY))

    async def hit(self, key: str, *, window_seconds: float) -> int:
        def fn(db: sqlite3.Connection, now: float) -> int:
            self._add(db, key, now)
            return self._inside(db, key, now - window_seconds)
        return int(await self._run(fn))  # type: ignore[arg-type]

    async def take(self, key: str, *, limit: int, window_seconds: float) -> bool:
        def fn(db: sqlite3.Connection, now: float) -> bool:
            if self._inside(db, key, now - window_seconds) >= limit:
                return False
            self._add(db, key, now)
            return True
        return bool(await self._run(fn))

    async def count(self, key: str, *, window_seconds: float) -> int:
        return int(await self._run(lambda db, now: self._inside(db, key, now - window_seconds)))  # type: ignore[arg-type]

    async def clear(self, key: str) -> None:
        await self._run(lambda db, now: db.execute("DELETE FROM hits WHERE key = ?", (key,)))

    async def lock(self, key: str, until: float) -> None:
        await self._run(lambda db, now: db.execute(
            "INSERT INTO locks (key, until) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET until = excluded.until",
            (key, until)))

    async def locked_until(self, key: str) -> float:
        def fn(db: sqlite3.Connection, now: float) -> float:
            row = db.execute("SELECT until FROM locks WHERE key = ?", (key,)).fetchone()
            return float(row[0]) if row is not None and row[0] > now else 0.0
        return float(await self._run(fn))  # type: ignore[arg-type]

    async def close(self) -> None:
        with self._lock:
            self._db.close()


# KEYS[1] the sorted set; ARGV: now, window start, limit (-1 = no limit), member, ttl seconds,
# hits kept.
# Returns the count inside the window after the hit, or -1 when the limit was reached (no hit).
_HIT_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local n = redis.call('ZCARD', KEYS[1])
if tonumber(ARGV[3]) >= 0 and n >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -1 - tonumber(ARGV[6]))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return n + 1
"""


class RedisCounters:
    """:class:`Counters` in Redis, shared by every gateway node."""

    def __init__(self, url: str, *, prefix: str = "voicegw:", clock: Callable[[], float] = time.time) -> None:
        from gateway.context.redis_store import connect, safe_url

        self.url = url
        self.clock = clock
        self._prefix = prefix
        self._safe_url = safe_url(url)
        self._redis = connect(url)
        self._hit = self._redis.register_script(_HIT_SCRIPT)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}{kind}:{key}"

    async def _call(self, doing: str, op: object) -> object:
        from redis.exceptions import RedisError

        try:
            return await op  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis counters at {self._safe_url} failed while {doing}: {exc}") from exc

    async def _script(self, key: str, limit: int, window_seconds: float) -> int:
        now = self.clock()
        ttl = max(1, int(window_seconds) + 1)
        member = f"{now:.6f}:{uuid.uuid4().hex[:8]}"
        return int(await self._call(f"counting {key}", self._hit(  # type: ignore[arg-type]
            keys=[self._key("hits", key)],
            args=[now, now - window_seconds, limit, member, ttl, MAX_HITS_PER_KEY])))

    async def hit(self, key: str, *, window_seconds: float) -> int:
        return await self._script(key, -1, window_seconds)

    async def take(self, key: str, *, limit: int, window_seconds: float) -> bool:
        return await self._script(key, limit, window_seconds) >= 0

    async def count(self, key: str, *, window_seconds: float) -> int:
        now = self.clock()
        return int(await self._call(f"counting {key}", self._redis.zcount(  # type: ignore[arg-type]
            self._key("hits", key), f"({now - window_seconds}", "+inf")))

    async def clear(self, key: str) -> None:
        await self._call(f"clearing {key}", self._redis.delete(self._key("hits", key)))

    async def lock(self, key: str, until: float) -> None:
        ms = int((until - self.clock()) * 1000)
        if ms > 0:
            await self._call(f"locking {key}", self._redis.set(self._key("lock", key), repr(until), px=ms))

    async def locked_until(self, key: str) -> float:
        value = await self._call(f"reading lock {key}", self._redis.get(self._key("lock", key)))
        until = float(value) if value else 0.0  # type: ignore[arg-type]
        return until if until > self.clock() else 0.0

    async def close(self) -> None:
        await self._redis.aclose()
