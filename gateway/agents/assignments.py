"""Which agents a conversation was routed to, shared by every gateway node.

The router records the agent it chose for a screen-pop, and AMI's ``AgentConnect`` records the
agent who answered; :func:`gateway.agents.access.authorize` then lets that agent read the
conversation on any node. Backends follow ``context.backend``:

- SQLite: ``<data_dir>/assignments.db`` (one worker thread, like the context store);
- Redis: a hash ``{p}assigned:{conversation_id}`` of agent -> time, expiring with the grant.

A grant lasts :data:`ASSIGNMENT_DAYS`; a read returns at most :data:`MAX_AGENTS` agents.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Protocol

from gateway.config import Settings
from gateway.context.store import StoreError
from gateway.sqlite_tx import write

ASSIGNMENTS_FILE = "assignments.db"
ASSIGNMENT_DAYS = 30
"""An agent keeps reading a conversation routed to them this long: long enough for the
follow-up work on a case, short enough that an old assignment is not a key for ever."""

MAX_AGENTS = 100
"""Agents returned for one conversation at most (a transfer rarely passes through more than a few)."""


class Assignments(Protocol):
    async def assign(self, conversation_id: str, agent: str, *, how: str) -> None:
        """Record that ``conversation_id`` was routed to ``agent`` (``how``: screen-pop, answered)."""
        ...

    async def agents_for(self, conversation_id: str) -> frozenset[str]:
        """The agents ``conversation_id`` was routed to within the grant's lifetime."""
        ...

    async def close(self) -> None:
        ...


class SqliteAssignments:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assignments-sqlite")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                path, timeout=5.0, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS assignments (conversation_id TEXT NOT NULL,"
                               " agent TEXT NOT NULL, how TEXT NOT NULL, at REAL NOT NULL,"
                               " PRIMARY KEY (conversation_id, agent)) WITHOUT ROWID")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the agent assignments {path}: {exc}; move the file aside and restart") from exc

    async def _run(self, doing: str, fn: Callable[[sqlite3.Connection], object]) -> object:
        conn = self._conn
        if conn is None:
            raise StoreError(f"agent assignments {self.path} are closed")

        def call() -> object:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"agent assignments {self.path}: {exc} while {doing}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def assign(self, conversation_id: str, agent: str, *, how: str) -> None:
        row = (conversation_id, agent, how, self._clock())
        await self._run("recording an assignment", lambda conn: write(conn, lambda c: c.execute(
            "INSERT INTO assignments (conversation_id, agent, how, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (conversation_id, agent) DO UPDATE SET how = excluded.how, at = excluded.at", row)))

    async def agents_for(self, conversation_id: str) -> frozenset[str]:
        since = self._clock() - ASSIGNMENT_DAYS * 86400

        def select(conn: sqlite3.Connection) -> frozenset[str]:
            rows = conn.execute("SELECT agent FROM assignments WHERE conversation_id = ? AND at >= ?"
                                " ORDER BY at DESC LIMIT ?", (conversation_id, since, MAX_AGENTS)).fetchall()
            return frozenset(r[0] for r in rows)

        return await self._run("reading assignments", select)  # type: ignore[return-value]

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


class RedisAssignments:
    def __init__(self, url: str, *, prefix: str = "voicegw:", clock: Callable[[], float] = time.time) -> None:
        from gateway.context.redis_store import connect

        self.url = url
        self._prefix = prefix
        self._clock = clock
        self._redis = connect(url)

    async def _call(self, doing: str, op: object) -> object:
        from redis.exceptions import RedisError

        from gateway.context.redis_store import safe_url

        try:
            return await op  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis agent assignments at {safe_url(self.url)} failed while {doing}: {exc}") from exc

    async def assign(self, conversation_id: str, agent: str, *, how: str) -> None:
        key = f"{self._prefix}assigned:{conversation_id}"

        async def op() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(key, agent, f"{self._clock():.3f}|{how}")
            pipe.expire(key, ASSIGNMENT_DAYS * 86400)
            await pipe.execute()

        await self._call("recording an assignment", op())

    async def agents_for(self, conversation_id: str) -> frozenset[str]:
        key = f"{self._prefix}assigned:{conversation_id}"
        since = self._clock() - ASSIGNMENT_DAYS * 86400
        found: dict[str, str] = await self._call("reading assignments", self._redis.hgetall(key))  # type: ignore[assignment]
        fresh = sorted(((float(v.split("|")[0]), a) for a, v in found.items() if float(v.split("|")[0]) >= since),
                       reverse=True)
        return frozenset(a for _, a in fresh[:MAX_AGENTS])

    async def close(self) -> None:
        await self._redis.aclose()


def open_assignments(settings: Settings) -> Assignments:
    """Assignments beside the configured context store."""
    if settings.context.backend == "redis":
        return RedisAssignments(settings.context.redis_url)
    return SqliteAssignments(settings.data_path(ASSIGNMENTS_FILE))
