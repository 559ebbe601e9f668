"""The outage spool: a node's durable, append-only queue of context writes Redis has not taken yet.

While Redis is away (:mod:`gateway.context.outage`), every write a node's conversations make (a
new conversation, an event, a saved record) is appended here, in the order the node made it,
and committed to disk before the caller goes on (SQLite, WAL, ``synchronous=FULL``): a node
killed during the outage keeps them, and replays them when it starts again and Redis answers.
The replay reads the oldest operations first and removes each only after Redis holds it, so
a replay interrupted anywhere is simply run again (each operation is idempotent on the Redis
side: see :meth:`gateway.context.redis_store.RedisStore.append_clean` and ``replay_save``).

One file per node, in its data directory (``context.spool_path``); one process holds it (an
exclusive lock on ``<file>.lock``).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.context.store import StoreUnavailable

SPOOL_FILE = "spool.db"

OpKind = Literal["create", "append", "save"]


@dataclass(frozen=True)
class SpooledOp:
    """One write waiting for Redis. ``data`` is what the replay needs, as stored JSON: the
    record (``create``, ``save``: plus ``base``, the record it changed, for the indexes), or
    the redacted event (``append``: uid, time, channel, kind, payload, the seq the node gave it)."""

    conversation_id: str
    kind: OpKind
    data: dict[str, Any]
    position: int = 0
    """Order in the spool (set when read back)."""


class Spool:
    """The spool file. ``add`` commits before it returns; ``oldest``/``remove`` drive the replay."""

    def __init__(self, path: str | Path, *, max_ops: int) -> None:
        self.path = Path(path)
        self.max_ops = max_ops
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # two processes draining one spool would both replay it: the first holds it, others fail
        self._holder = open(self.path.with_name(self.path.name + ".lock"), "a")
        try:
            fcntl.flock(self._holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._holder.close()
            raise StoreUnavailable(f"outage spool {self.path} is held by another process (one node per data "
                                   "directory)") from exc
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a killed node
            self._db.execute("CREATE TABLE IF NOT EXISTS ops (position INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "conversation_id TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL)")
            self._count = int(self._db.execute("SELECT COUNT(*) FROM ops").fetchone()[0])
        except sqlite3.Error as exc:
            self._holder.close()
            raise StoreUnavailable(f"outage spool {self.path} cannot be opened: {exc}; move it aside only "
                                   "after its operations are in Redis") from exc
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def _run(self, fn: Any) -> Any:
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"outage spool {self.path}: {exc}") from exc

    def add_now(self, op: SpooledOp) -> None:
        """Append ``op`` and commit (blocking). Refuses when the spool is full."""
        if self._count >= self.max_ops:
            raise StoreUnavailable(f"outage spool {self.path} holds {self._count} operations "
                                   f"(context.spool_max_ops); Redis has been away too long to keep more")
        text = json.dumps(op.data, ensure_ascii=False, separators=(",", ":"))
        self._run(lambda db: db.execute("INSERT INTO ops (conversation_id, kind, data) VALUES (?, ?, ?)",
                                        (op.conversation_id, op.kind, text)))
        self._count += 1

    async def add(self, op: SpooledOp) -> None:
        await asyncio.to_thread(self.add_now, op)

    def oldest_now(self, limit: int) -> list[SpooledOp]:
        rows = self._run(lambda db: db.execute(
            "SELECT position, conversation_id, kind, data FROM ops ORDER BY position LIMIT ?", (limit,)).fetchall())
        return [SpooledOp(cid, kind, json.loads(data), position) for position, cid, kind, data in rows]

    async def oldest(self, limit: int) -> list[SpooledOp]:
        """The ``limit`` oldest operations, oldest first."""
        return await asyncio.to_thread(self.oldest_now, limit)

    def remove_through_now(self, position: int) -> None:
        removed = self._run(lambda db: db.execute("DELETE FROM ops WHERE position <= ?", (position,)).rowcount)
        self._count -= int(removed)

    async def remove_through(self, position: int) -> None:
        """Forget every operation up to ``position``: Redis now holds them."""
        await asyncio.to_thread(self.remove_through_now, position)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._holder.close()  # releases the lock
