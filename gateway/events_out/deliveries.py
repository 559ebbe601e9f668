"""Where webhook delivery stands: each webhook's cursor in the feed, and the dead-letter store.

Backends follow ``context.backend``:

- SQLite: ``<data_dir>/events_out.db`` (tables ``cursors`` and ``dead_letters``), one worker
  thread like the other SQLite files;
- Redis: ``{p}events_out:cursors`` (hash webhook -> position), ``{p}events_out:dead`` (a list of
  JSON entries, newest last, at most :data:`MAX_DEAD_LETTERS`) and ``{p}events_out:lease:{name}``
  (which node delivers to that webhook: one at a time, so events arrive in order).

A cursor is the position of the last event the webhook acknowledged (or skipped); delivery goes
on after it. ``replay`` sets it back.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Protocol, TypeVar

from gateway.config import Settings
from gateway.context.store import StoreError
from gateway.sqlite_tx import write

T = TypeVar("T")

DELIVERIES_FILE = "events_out.db"
MAX_DEAD_LETTERS = 10_000
"""Dead letters kept per backend (the oldest go first): an outage cannot fill the disk."""
MAX_LISTED = 1000


@dataclass(frozen=True)
class DeadLetter:
    id: str
    webhook: str
    position: str
    conversation_id: str
    event: dict[str, Any]
    attempts: int
    error: str
    at: float


class Deliveries(Protocol):
    async def cursor(self, webhook: str) -> str:
        """The webhook's position ('' = from the start of the feed)."""
        ...

    async def advance(self, webhook: str, position: str) -> None:
        ...

    async def dead_letter(self, webhook: str, position: str, event: dict[str, Any], attempts: int,
                          error: str) -> None:
        ...

    async def dead_letters(self, webhook: str = "", limit: int = 100) -> list[DeadLetter]:
        """Newest first."""
        ...

    async def drop_dead_letter(self, letter_id: str) -> bool:
        ...

    async def erase(self, conversation_ids: Iterable[str]) -> int:
        """Remove the dead letters of these conversations; how many went."""
        ...

    async def expire(self, before: float) -> int:
        """Remove dead letters older than ``before``."""
        ...

    async def lease(self, webhook: str, holder: str, seconds: float) -> bool:
        """Hold (or renew) the right to deliver to ``webhook``; False while another node holds it."""
        ...

    async def release(self, webhook: str, holder: str) -> None:
        """Give the lease up (a node shutting down hands over at once)."""
        ...

    async def close(self) -> None:
        ...


class SqliteDeliveries:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="events-out-sqlite")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA secure_delete = ON")  # erased dead letters are overwritten
            conn.execute("CREATE TABLE IF NOT EXISTS cursors (webhook TEXT PRIMARY KEY, position TEXT NOT NULL,"
                         " updated_at REAL NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                         " webhook TEXT NOT NULL, position TEXT NOT NULL, conversation_id TEXT NOT NULL,"
                         " event TEXT NOT NULL, attempts INTEGER NOT NULL, error TEXT NOT NULL, at REAL NOT NULL)")
            conn.execute("CREATE INDEX IF NOT EXISTS dead_conversation ON dead_letters (conversation_id)")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the webhook delivery state {path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn

    async def _run(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"webhook delivery state {self.path} is closed")

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"webhook delivery state {self.path}: {exc} while {doing}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def cursor(self, webhook: str) -> str:
        row = await self._run("reading a cursor", lambda c: c.execute(
            "SELECT position FROM cursors WHERE webhook = ?", (webhook,)).fetchone())
        return str(row[0]) if row else ""

    async def advance(self, webhook: str, position: str) -> None:
        now = self._clock()
        await self._run("moving a cursor", lambda c: write(c, lambda c: c.execute(
            "INSERT INTO cursors (webhook, position, updated_at) VALUES (?, ?, ?) ON CONFLICT (webhook)"
            " DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            (webhook, position, now))))

    async def dead_letter(self, webhook: str, position: str, event: dict[str, Any], attempts: int,
                          error: str) -> None:
        row = (webhook, position, str(event.get("conversation_id", "")), json.dumps(event), attempts,
               error[:500], self._clock())

        def insert(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO dead_letters (webhook, position, conversation_id, event, attempts, error, at)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            c.execute("DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?",
                      (MAX_DEAD_LETTERS,))

        await self._run("storing a dead letter", lambda c: write(c, insert))

    async def dead_letters(self, webhook: str = "", limit: int = 100) -> list[DeadLetter]:
        count = max(1, min(limit, MAX_LISTED))

        def select(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            sql = "SELECT id, webhook, position, conversation_id, event, attempts, error, at FROM dead_letters"
            if webhook:
                return c.execute(sql + " WHERE webhook = ? ORDER BY id DESC LIMIT ?", (webhook, count)).fetchall()
            return c.execute(sql + " ORDER BY id DESC LIMIT ?", (count,)).fetchall()

        rows = await self._run("listing dead letters", select)
        return [DeadLetter(str(r[0]), r[1], r[2], r[3], json.loads(r[4]), int(r[5]), r[6], float(r[7])) for r in rows]

    async def drop_dead_letter(self, letter_id: str) -> bool:
        n = await self._run("dropping a dead letter", lambda c: write(c, lambda c: c.execute(
            "DELETE FROM dead_letters WHERE id = ?", (letter_id,)).rowcount))
        return bool(n)

    async def erase(self, conversation_ids: Iterable[str]) -> int:
        ids = list(conversation_ids)

        def delete(c: sqlite3.Connection) -> int:
            n = 0
            for cid in ids:
                n += c.execute("DELETE FROM dead_letters WHERE conversation_id = ?", (cid,)).rowcount
            return n

        n = await self._run("erasing dead letters", lambda c: write(c, delete))
        await self._run("checkpointing", lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        return int(n)

    async def expire(self, before: float) -> int:
        return int(await self._run("expiring dead letters", lambda c: write(c, lambda c: c.execute(
            "DELETE FROM dead_letters WHERE at < ?", (before,)).rowcount)))

    async def lease(self, webhook: str, holder: str, seconds: float) -> bool:
        return True  # one node: nobody to share with

    async def release(self, webhook: str, holder: str) -> None:
        return None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


# Take or renew the lease: set when free or already ours; ARGV: holder, milliseconds.
_LEASE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisDeliveries:
    def __init__(self, url: str, *, prefix: str = "voicegw:", clock: Callable[[], float] = time.time) -> None:
        from gateway.context.redis_store import connect

        self.url = url
        self._prefix = prefix + "events_out:"
        self._clock = clock
        self._redis = connect(url)
        self._lease = self._redis.register_script(_LEASE_SCRIPT)
        self._release = self._redis.register_script(_RELEASE_SCRIPT)

    async def _call(self, doing: str, op: Awaitable[T]) -> T:
        from redis.exceptions import RedisError

        from gateway.context.redis_store import safe_url

        try:
            return await op
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis webhook delivery state at {safe_url(self.url)} failed while {doing}: {exc}") \
                from exc

    async def cursor(self, webhook: str) -> str:
        value = await self._call("reading a cursor", self._redis.hget(self._prefix + "cursors", webhook))
        return str(value) if value else ""

    async def advance(self, webhook: str, position: str) -> None:
        await self._call("moving a cursor", self._redis.hset(self._prefix + "cursors", webhook, position))

    async def dead_letter(self, webhook: str, position: str, event: dict[str, Any], attempts: int,
                          error: str) -> None:
        key = self._prefix + "dead"
        letter = {"id": f"{webhook}:{position}", "webhook": webhook, "position": position,
                  "conversation_id": str(event.get("conversation_id", "")), "event": event, "attempts": attempts,
                  "error": error[:500], "at": self._clock()}

        async def op() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.rpush(key, json.dumps(letter))
            pipe.ltrim(key, -MAX_DEAD_LETTERS, -1)
            await pipe.execute()

        await self._call("storing a dead letter", op())

    async def _all(self) -> list[tuple[str, dict[str, Any]]]:
        items = await self._call("listing dead letters", self._redis.lrange(self._prefix + "dead", 0, -1))
        return [(item, json.loads(item)) for item in items]

    async def dead_letters(self, webhook: str = "", limit: int = 100) -> list[DeadLetter]:
        count = max(1, min(limit, MAX_LISTED))
        out = []
        for _, d in reversed(await self._all()):
            if webhook and d["webhook"] != webhook:
                continue
            out.append(DeadLetter(d["id"], d["webhook"], d["position"], d["conversation_id"], d["event"],
                                  int(d["attempts"]), d["error"], float(d["at"])))
            if len(out) >= count:
                break
        return out

    async def _remove(self, doing: str, doomed: Callable[[dict[str, Any]], bool]) -> int:
        n = 0
        for raw, d in await self._all():
            if doomed(d):
                n += int(await self._call(doing, self._redis.lrem(self._prefix + "dead", 1, raw)))
        return n

    async def drop_dead_letter(self, letter_id: str) -> bool:
        return bool(await self._remove("dropping a dead letter", lambda d: d["id"] == letter_id))

    async def erase(self, conversation_ids: Iterable[str]) -> int:
        ids = set(conversation_ids)
        return await self._remove("erasing dead letters", lambda d: d["conversation_id"] in ids)

    async def expire(self, before: float) -> int:
        return await self._remove("expiring dead letters", lambda d: float(d["at"]) < before)

    async def lease(self, webhook: str, holder: str, seconds: float) -> bool:
        got = await self._call("taking the delivery lease", self._lease(
            keys=[self._prefix + "lease:" + webhook], args=[holder, int(seconds * 1000)]))
        return bool(got)

    async def release(self, webhook: str, holder: str) -> None:
        await self._call("giving the delivery lease up", self._release(
            keys=[self._prefix + "lease:" + webhook], args=[holder]))

    async def close(self) -> None:
        await self._redis.aclose()


def open_deliveries(settings: Settings, *, clock: Callable[[], float] = time.time) -> Deliveries:
    """Delivery state beside the configured context store."""
    if settings.context.backend == "redis":
        return RedisDeliveries(settings.context.redis_url, clock=clock)
    return SqliteDeliveries(settings.data_path(DELIVERIES_FILE), clock=clock)
