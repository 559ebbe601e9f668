"""The do-not-call list: numbers the gateway never calls or texts again.

A customer opts out by voice, by key or by SMS reply (``gateway.core.compliance``); a supervisor
can add a number through the campaign API and an admin through ``voicegw dnc``. The core's
outbound policy (``gateway.core.outbound``) refuses every call and SMS to a listed number, so
no path (a campaign, a reminder, a callback, a follow-up, a one-time code) gets past it.

A number is keyed by its digits alone (``+1 555-123-4567`` and ``15551234567`` are one entry),
the way :func:`gateway.core.trust.same_number` compares lines. Two backends, chosen like the
context store: a SQLite file in the data directory, or one Redis hash shared by every node.
A list that cannot be read raises :class:`~gateway.context.store.StoreError`; the policy then
refuses (an unchecked call to someone who said stop is never worth it).

Entries are only removed by an admin (``voicegw dnc remove``): an SMS "START" is a claim any
sender can forge, so it never takes a number off the list.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from gateway.config import Settings
from gateway.context.store import StoreError

DNC_FILE = "dnc.db"
MIN_DIGITS, MAX_DIGITS = 7, 15
"""A listed number has 7 (a local number) to 15 (E.164's most) digits."""
MAX_LISTED = 1000
"""Most entries one listing returns."""
MAX_SOURCE_CHARS = 40


@dataclass(frozen=True)
class DncEntry:
    """One listed number: when, how (``sms``, ``voice``, ``key``, ``chat``, ``api``, ``cli``...) and
    in which conversation it was asked for."""

    number: str
    at: float
    source: str
    conversation_id: str = ""


def number_key(number: str) -> str:
    """The digits of ``number`` (its key on the list), or '' when it is not a phone number."""
    digits = re.sub(r"\D", "", number or "")
    return digits if MIN_DIGITS <= len(digits) <= MAX_DIGITS else ""


class DoNotCall(Protocol):
    async def add(self, number: str, *, source: str, conversation_id: str = "") -> bool:
        """List ``number``; True when it was not listed before. ``ValueError`` for a non-number."""
        ...

    async def contains(self, number: str) -> bool:
        """Whether ``number`` is listed."""
        ...

    async def remove(self, number: str) -> bool:
        """Take ``number`` off the list (admins only); True when it was listed."""
        ...

    async def entries(self, limit: int = 100) -> list[DncEntry]:
        """Listed numbers, newest first, at most ``limit`` (and :data:`MAX_LISTED`)."""
        ...

    async def close(self) -> None:
        ...


def _key(number: str) -> str:
    key = number_key(number)
    if not key:
        raise ValueError(f"{number!r} is not a phone number ({MIN_DIGITS} to {MAX_DIGITS} digits)")
    return key


class SqliteDoNotCall:
    """:class:`DoNotCall` in a SQLite file (one node, or several processes on one data directory)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_ms / 1000)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS dnc (key TEXT PRIMARY KEY, number TEXT NOT NULL,"
                             " at REAL NOT NULL, source TEXT NOT NULL, conversation_id TEXT NOT NULL DEFAULT '')")
            self._db.execute("CREATE INDEX IF NOT EXISTS dnc_at ON dnc (at)")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"do-not-call list {self.path} cannot be opened: {exc}") from exc

    async def _run(self, doing: str, fn: Callable[[sqlite3.Connection], object]) -> object:
        def work() -> object:
            with self._lock:
                if self._db is None:
                    raise StoreError(f"do-not-call list {self.path} is closed")
                try:
                    return fn(self._db)
                except sqlite3.Error as exc:
                    raise StoreError(f"do-not-call list {self.path}: {exc} while {doing}") from exc

        return await asyncio.to_thread(work)

    async def add(self, number: str, *, source: str, conversation_id: str = "") -> bool:
        key, at = _key(number), self.clock()
        row = (key, "+" + key, at, source[:MAX_SOURCE_CHARS], conversation_id[:64])
        added = await self._run("adding a number", lambda db: db.execute(
            "INSERT OR IGNORE INTO dnc (key, number, at, source, conversation_id) VALUES (?, ?, ?, ?, ?)",
            row).rowcount)
        return bool(added)

    async def contains(self, number: str) -> bool:
        key = number_key(number)
        if not key:
            return False
        found = await self._run("reading", lambda db: db.execute("SELECT 1 FROM dnc WHERE key = ?", (key,)).fetchone())
        return found is not None

    async def remove(self, number: str) -> bool:
        key = _key(number)
        return bool(await self._run("removing a number",
                                    lambda db: db.execute("DELETE FROM dnc WHERE key = ?", (key,)).rowcount))

    async def entries(self, limit: int = 100) -> list[DncEntry]:
        count = max(1, min(int(limit), MAX_LISTED))
        rows = await self._run("listing", lambda db: db.execute(
            "SELECT number, at, source, conversation_id FROM dnc ORDER BY at DESC LIMIT ?", (count,)).fetchall())
        return [DncEntry(str(r[0]), float(r[1]), str(r[2]), str(r[3])) for r in rows]  # type: ignore[union-attr]

    async def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class RedisDoNotCall:
    """:class:`DoNotCall` in one Redis hash (``{p}dnc``: digits -> JSON entry), shared by every node."""

    def __init__(self, url: str, *, prefix: str = "voicegw:", clock: Callable[[], float] = time.time) -> None:
        from gateway.context.redis_store import connect, safe_url

        self.clock = clock
        self._hash = f"{prefix}dnc"
        self._safe_url = safe_url(url)
        self._redis = connect(url)

    async def _call(self, doing: str, op: object) -> object:
        from redis.exceptions import RedisError

        try:
            return await op  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreError(f"do-not-call list in Redis at {self._safe_url} failed while {doing}: {exc}") from exc

    async def add(self, number: str, *, source: str, conversation_id: str = "") -> bool:
        key = _key(number)
        entry = json.dumps({"number": "+" + key, "at": self.clock(), "source": source[:MAX_SOURCE_CHARS],
                            "conversation_id": conversation_id[:64]})
        return bool(await self._call("adding a number", self._redis.hsetnx(self._hash, key, entry)))

    async def contains(self, number: str) -> bool:
        key = number_key(number)
        return bool(key) and bool(await self._call("reading", self._redis.hexists(self._hash, key)))

    async def remove(self, number: str) -> bool:
        return bool(await self._call("removing a number", self._redis.hdel(self._hash, _key(number))))

    async def entries(self, limit: int = 100) -> list[DncEntry]:
        count = max(1, min(int(limit), MAX_LISTED))
        out: list[DncEntry] = []
        cursor = 0
        while True:  # HSCAN: a long list is read in pages, never at once
            cursor, page = await self._call("listing", self._redis.hscan(self._hash, cursor, count=200))  # type: ignore[misc]
            for raw in page.values():
                item = json.loads(raw)
                out.append(DncEntry(str(item["number"]), float(item["at"]), str(item.get("source", "")),
                                    str(item.get("conversation_id", ""))))
            if not cursor or len(out) >= MAX_LISTED:
                break
        return sorted(out, key=lambda e: e.at, reverse=True)[:count]

    async def close(self) -> None:
        await self._redis.aclose()


def open_do_not_call(settings: Settings) -> DoNotCall:
    """The do-not-call list beside the configured store (``<data_dir>/dnc.db``, or the same Redis)."""
    if settings.context.backend == "redis":
        return RedisDoNotCall(settings.context.redis_url)
    return SqliteDoNotCall(settings.data_path(DNC_FILE), busy_timeout_ms=settings.context.busy_timeout_ms)
