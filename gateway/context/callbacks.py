"""Scheduled callbacks: "call me back at three" when the agents' queue is long.

The core writes one entry per conversation (a later request replaces it): when to call, and
which queue the agent who takes the call comes from. The digital side's poller (in ``voicegw
serve``) claims the entries that are due, asks the core to place each call (to the number on
file, under the outbound policy: ``gateway.core.outbound``) and marks them done. Claiming is one
atomic step, so two pollers (two nodes on one Redis, or a restart) never place one callback twice.

Two backends, chosen like the context store: a SQLite file in the data directory, or a Redis
sorted set of due times beside a hash of entries. Nothing here is a secret: a conversation id, a
time, a queue name.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

from gateway.config import Settings
from gateway.context.store import StoreError

CALLBACKS_FILE = "callbacks.db"
CLAIM_SECONDS = 300.0
"""A claimed callback not marked done within this is due again (its poller died mid-call)."""
MAX_DUE = 100
"""Callbacks claimed per poll at most."""


@dataclass(frozen=True)
class ScheduledCallback:
    conversation_id: str
    due_at: float
    queue: str
    skills: tuple[str, ...] = ()
    reason: str = ""


class Callbacks(Protocol):
    async def schedule(self, callback: ScheduledCallback) -> None:
        """Schedule (or move) the conversation's callback."""
        ...

    async def claim_due(self, now: float, limit: int = MAX_DUE) -> list[ScheduledCallback]:
        """The callbacks due at ``now``, each claimed for one poller."""
        ...

    async def done(self, conversation_id: str) -> None:
        """The callback was placed (or can never be): forget it."""
        ...

    async def get(self, conversation_id: str) -> ScheduledCallback | None: ...

    async def close(self) -> None: ...


def _loads(text: str) -> ScheduledCallback:
    data = json.loads(text)
    return ScheduledCallback(str(data["conversation_id"]), float(data["due_at"]), str(data["queue"]),
                             tuple(data.get("skills", ())), str(data.get("reason", "")))


def _dumps(callback: ScheduledCallback) -> str:
    return json.dumps(asdict(callback), separators=(",", ":"))


class SqliteCallbacks:
    """:class:`Callbacks` in a SQLite file."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                       timeout=busy_timeout_ms / 1000)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS callbacks (conversation_id TEXT PRIMARY KEY,"
                             " due_at REAL NOT NULL, claimed_until REAL NOT NULL DEFAULT 0, entry TEXT NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (due_at)")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"scheduled callbacks {self.path} cannot be opened: {exc}") from exc

    async def _run(self, doing: str, fn: Callable[[sqlite3.Connection], object]) -> object:
        def work() -> object:
            with self._lock:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(self._db)
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("COMMIT")
                    return result
                except sqlite3.Error as exc:
                    raise StoreError(f"scheduled callbacks {self.path}: {exc} while {doing}") from exc

        return await asyncio.to_thread(work)

    async def schedule(self, callback: ScheduledCallback) -> None:
        await self._run("scheduling", lambda db: db.execute(
            "INSERT INTO callbacks (conversation_id, due_at, claimed_until, entry) VALUES (?, ?, 0, ?)"
            " ON CONFLICT (conversation_id) DO UPDATE SET due_at = excluded.due_at, claimed_until = 0,"
            " entry = excluded.entry", (callback.conversation_id, callback.due_at, _dumps(callback))))

    async def claim_due(self, now: float, limit: int = MAX_DUE) -> list[ScheduledCallback]:
        def claim(db: sqlite3.Connection) -> list[ScheduledCallback]:
            rows = db.execute("SELECT conversation_id, entry FROM callbacks WHERE due_at <= ? AND claimed_until <= ?"
                              " ORDER BY due_at LIMIT ?", (now, now, limit)).fetchall()
            for cid, _ in rows:
                db.execute("UPDATE callbacks SET claimed_until = ? WHERE conversation_id = ?",
                           (now + CLAIM_SECONDS, cid))
            return [_loads(entry) for _, entry in rows]
        return list(await self._run("claiming due callbacks", claim))  # type: ignore[arg-type]

    async def done(self, conversation_id: str) -> None:
        await self._run("forgetting a callback", lambda db: db.execute(
            "DELETE FROM callbacks WHERE conversation_id = ?", (conversation_id,)))

    async def get(self, conversation_id: str) -> ScheduledCallback | None:
        row = await self._run("reading a callback", lambda db: db.execute(
            "SELECT entry FROM callbacks WHERE conversation_id = ?", (conversation_id,)).fetchone())
        return _loads(row[0]) if row else None  # type: ignore[index]

    async def close(self) -> None:
        with self._lock:
            self._db.close()


# KEYS: the due set, the entries hash; ARGV: now, claim-until, limit. Due members are moved to
# their claim-until score (claimed) and their entries returned, in one step.
_CLAIM_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then table.insert(out, entry) else redis.call('ZREM', KEYS[1], id) end
end
return out
"""


class RedisCallbacks:
    """:class:`Callbacks` in Redis, shared by every node."""

    def __init__(self, url: str, *, prefix: str = "voicegw:") -> None:
        from gateway.context.redis_store import connect, safe_url

        self._safe_url = safe_url(url)
        self._redis = connect(url)
        self._due, self._entries = f"{prefix}callbacks:due", f"{prefix}callbacks:entries"
        self._claim = self._redis.register_script(_CLAIM_SCRIPT)

    async def _call(self, doing: str, op: object) -> object:
        from redis.exceptions import RedisError

        try:
            return await op  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis scheduled callbacks at {self._safe_url} failed while {doing}: {exc}") from exc

    async def schedule(self, callback: ScheduledCallback) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._entries, callback.conversation_id, _dumps(callback))
        pipe.zadd(self._due, {callback.conversation_id: callback.due_at})
        await self._call("scheduling", pipe.execute())

    async def claim_due(self, now: float, limit: int = MAX_DUE) -> list[ScheduledCallback]:
        rows = await self._call("claiming due callbacks", self._claim(
            keys=[self._due, self._entries], args=[now, now + CLAIM_SECONDS, limit]))
        return [_loads(r) for r in rows]  # type: ignore[union-attr]

    async def done(self, conversation_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self._due, conversation_id)
        pipe.hdel(self._entries, conversation_id)
        await self._call("forgetting a callback", pipe.execute())

    async def get(self, conversation_id: str) -> ScheduledCallback | None:
        text = await self._call("reading a callback", self._redis.hget(self._entries, conversation_id))
        return _loads(text) if text else None  # type: ignore[arg-type]

    async def close(self) -> None:
        await self._redis.aclose()


def open_callbacks(settings: Settings) -> Callbacks:
    """Scheduled callbacks beside the configured store."""
    if settings.context.backend == "redis":
        return RedisCallbacks(settings.context.redis_url)
    return SqliteCallbacks(settings.data_path(CALLBACKS_FILE), busy_timeout_ms=settings.context.busy_timeout_ms)
