"""QA scores: one result per conversation and scorecard, with reviewers' overrides.

Backends follow ``context.backend``: SQLite ``<data_dir>/qa.db`` (one worker thread), or Redis
(``{p}qa:{conversation_id}`` a hash scorecard -> JSON, ``{p}qa:ended`` a sorted set of
``conversation_id|scorecard`` by the conversation's end). Results are written again when a
conversation changes after it was scored (a resumed one); an override survives that, as long as
the item still exists. Overrides are audited by the caller (:mod:`gateway.governance.review_page`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Protocol, TypeVar

from gateway.config import Settings
from gateway.context.store import StoreError
from gateway.governance.qa import QaResult
from gateway.sqlite_tx import write

T = TypeVar("T")
QA_FILE = "qa.db"
MAX_LISTED = 500


class QaStore(Protocol):
    async def get(self, conversation_id: str, scorecard: str) -> QaResult | None: ...
    async def put(self, result: QaResult) -> None: ...
    async def between(self, since: float, until: float, *, limit: int = 10_000) -> list[QaResult]:
        """Results of conversations that ended in the range, newest first."""
        ...
    async def scores_of(self, conversation_ids: list[str]) -> list[dict[str, Any]]: ...
    async def erase(self, conversation_ids: Iterable[str]) -> int: ...
    async def expire(self, before: float) -> int: ...
    async def close(self) -> None: ...


def keep_overrides(new: QaResult, old: QaResult | None) -> QaResult:
    """``new`` with the overrides ``old`` carried for items that still exist."""
    if old is not None:
        previous = {i["id"]: i.get("override") for i in old.items if i.get("override")}
        for item in new.items:
            if item["id"] in previous:
                item["override"] = previous[item["id"]]
    return new


class SqliteQaStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-sqlite")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("CREATE TABLE IF NOT EXISTS scores (conversation_id TEXT NOT NULL, scorecard TEXT NOT NULL,"
                         " ended_at REAL NOT NULL, result TEXT NOT NULL, PRIMARY KEY (conversation_id, scorecard))")
            conn.execute("CREATE INDEX IF NOT EXISTS scores_ended ON scores (ended_at)")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the QA scores {path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn

    async def _run(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"QA scores {self.path} are closed")

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"QA scores {self.path}: {exc} while {doing}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def get(self, conversation_id: str, scorecard: str) -> QaResult | None:
        row = await self._run("reading a score", lambda c: c.execute(
            "SELECT result FROM scores WHERE conversation_id = ? AND scorecard = ?",
            (conversation_id, scorecard)).fetchone())
        return QaResult.from_dict(json.loads(row[0])) if row else None

    async def put(self, result: QaResult) -> None:
        row = (result.conversation_id, result.scorecard, result.ended_at, json.dumps(result.as_dict()))
        await self._run("storing a score", lambda c: write(c, lambda c: c.execute(
            "INSERT INTO scores (conversation_id, scorecard, ended_at, result) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (conversation_id, scorecard) DO UPDATE SET ended_at = excluded.ended_at,"
            " result = excluded.result", row)))

    async def between(self, since: float, until: float, *, limit: int = 10_000) -> list[QaResult]:
        rows = await self._run("listing scores", lambda c: c.execute(
            "SELECT result FROM scores WHERE ended_at >= ? AND ended_at < ? ORDER BY ended_at DESC LIMIT ?",
            (since, until, limit)).fetchall())
        return [QaResult.from_dict(json.loads(r[0])) for r in rows]

    async def scores_of(self, conversation_ids: list[str]) -> list[dict[str, Any]]:
        def select(c: sqlite3.Connection) -> list[str]:
            out: list[str] = []
            for cid in conversation_ids:
                out += [r[0] for r in c.execute("SELECT result FROM scores WHERE conversation_id = ?", (cid,))]
            return out
        return [json.loads(t) for t in await self._run("reading scores", select)]

    async def erase(self, conversation_ids: Iterable[str]) -> int:
        ids = list(conversation_ids)
        n = await self._run("erasing scores", lambda c: write(c, lambda c: sum(
            c.execute("DELETE FROM scores WHERE conversation_id = ?", (cid,)).rowcount for cid in ids)))
        await self._run("checkpointing", lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        return int(n)

    async def expire(self, before: float) -> int:
        return int(await self._run("expiring scores", lambda c: write(c, lambda c: c.execute(
            "DELETE FROM scores WHERE ended_at < ?", (before,)).rowcount)))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


class RedisQaStore:
    def __init__(self, url: str, *, prefix: str = "voicegw:") -> None:
        from gateway.context.redis_store import connect

        self.url = url
        self._p = prefix + "qa:"
        self._redis = connect(url)

    async def _call(self, doing: str, op: Awaitable[T]) -> T:
        from redis.exceptions import RedisError

        from gateway.context.redis_store import safe_url

        try:
            return await op
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis QA scores at {safe_url(self.url)} failed while {doing}: {exc}") from exc

    async def get(self, conversation_id: str, scorecard: str) -> QaResult | None:
        text = await self._call("reading a score", self._redis.hget(self._p + conversation_id, scorecard))
        return QaResult.from_dict(json.loads(text)) if text else None

    async def put(self, result: QaResult) -> None:
        async def op() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._p + result.conversation_id, result.scorecard, json.dumps(result.as_dict()))
            pipe.zadd(self._p + "ended", {f"{result.conversation_id}|{result.scorecard}": result.ended_at})
            await pipe.execute()
        await self._call("storing a score", op())

    async def between(self, since: float, until: float, *, limit: int = 10_000) -> list[QaResult]:
        members = await self._call("listing scores", self._redis.zrevrangebyscore(
            self._p + "ended", f"({until!r}", repr(since), start=0, num=limit))
        out = []
        for member in members:
            cid, _, card = member.partition("|")
            result = await self.get(cid, card)
            if result is not None:
                out.append(result)
        return out

    async def scores_of(self, conversation_ids: list[str]) -> list[dict[str, Any]]:
        out = []
        for cid in conversation_ids:
            found = await self._call("reading scores", self._redis.hgetall(self._p + cid))
            out += [json.loads(v) for v in found.values()]
        return out

    async def erase(self, conversation_ids: Iterable[str]) -> int:
        n = 0
        for cid in conversation_ids:
            cards = await self._call("erasing scores", self._redis.hkeys(self._p + cid))
            if cards:
                await self._call("erasing scores", self._redis.zrem(self._p + "ended", *[f"{cid}|{c}" for c in cards]))
                n += int(await self._call("erasing scores", self._redis.delete(self._p + cid))) * len(cards)
        return n

    async def expire(self, before: float) -> int:
        members = await self._call("expiring scores", self._redis.zrangebyscore(self._p + "ended", "-inf",
                                                                                f"({before!r}"))
        ids = list(dict.fromkeys(m.partition("|")[0] for m in members))
        return await self.erase(ids)

    async def close(self) -> None:
        await self._redis.aclose()


def open_qa_store(settings: Settings) -> QaStore:
    if settings.context.backend == "redis":
        return RedisQaStore(settings.context.redis_url)
    return SqliteQaStore(settings.data_path(QA_FILE))


__all__ = ["QaStore", "SqliteQaStore", "RedisQaStore", "open_qa_store", "keep_overrides"]
