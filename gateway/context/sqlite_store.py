"""The embedded context store: one SQLite file (WAL mode) in the data directory.

Every call runs on one dedicated worker thread that owns the connection, so a database locked
by another process (waited on for ``busy_timeout_ms``) never stalls the event loop. Each write
is one transaction: a failure leaves nothing half-written. The event log table refuses UPDATE
and DELETE (triggers), so the log is append-only at the database level too; retention and
erasure go through the one guarded way around it (:mod:`gateway.context.sqlite_lifecycle`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from gateway.config import RedactionSettings
from gateway.context import sqlite_lifecycle as lifecycle
from gateway.context.lifecycle import MAX_FEED_BATCH, MAX_SCAN, Cutoffs, FeedEntry, PurgeCounts
from gateway.context.redaction import Redactor
from gateway.context.store import (
    ConversationRecord,
    LoggedEvent,
    StoreError,
    concurrent_update,
    event_payload,
    load_record,
    new_record,
    not_stored,
    record_to_json,
    saved_copy,
)
from gateway.sqlite_tx import immediate, run_script, write

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 2
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE conversations (
        id          TEXT PRIMARY KEY,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        customer_id TEXT NOT NULL DEFAULT '',
        caller_id   TEXT NOT NULL DEFAULT '',
        status      TEXT NOT NULL DEFAULT 'active',
        version     INTEGER NOT NULL DEFAULT 0,
        record      TEXT NOT NULL
    );
    CREATE INDEX conversations_customer ON conversations (customer_id, updated_at);
    CREATE INDEX conversations_caller ON conversations (caller_id, updated_at);
    CREATE INDEX conversations_updated ON conversations (updated_at);
    CREATE TABLE events (
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        seq             INTEGER NOT NULL,
        at              REAL NOT NULL,
        channel         TEXT NOT NULL,
        kind            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
    """,
    # 2: the feed (every event in one global order, filled by a trigger in the event's own
    # transaction) and the one guarded way around the append-only log (gateway.context.lifecycle)
    2: """
    CREATE TABLE feed (
        pos             INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        at              REAL NOT NULL
    );
    CREATE INDEX feed_conversation ON feed (conversation_id);
    INSERT INTO feed (conversation_id, seq, at) SELECT conversation_id, seq, at FROM events ORDER BY at, conversation_id, seq;
    CREATE TRIGGER events_feed AFTER INSERT ON events BEGIN INSERT INTO feed (conversation_id, seq, at) VALUES (NEW.conversation_id, NEW.seq, NEW.at); END;
    CREATE TABLE purge_guard (purge_id INTEGER NOT NULL);
    CREATE TABLE purges (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at     REAL NOT NULL,
        actor  TEXT NOT NULL,
        reason TEXT NOT NULL,
        counts TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE retention_marks (kind TEXT PRIMARY KEY, upto REAL NOT NULL);
    DROP TRIGGER events_no_update;
    DROP TRIGGER events_no_delete;
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events WHEN NOT EXISTS (SELECT 1 FROM purge_guard) BEGIN SELECT RAISE(ABORT, 'the event log is append-only (retention and erasure go through a guarded purge)'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events WHEN NOT EXISTS (SELECT 1 FROM purge_guard) BEGIN SELECT RAISE(ABORT, 'the event log is append-only (retention and erasure go through a guarded purge)'); END;
    """,
}

_COLUMNS = "record"


class SqliteStore:
    """:class:`~gateway.context.store.ContextStore` on a SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        redaction: RedactionSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.redactor = Redactor(redaction)
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="context-sqlite")
        self._conn = self._open()

    # -- opening and schema ------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {self.path.parent}: {exc.strerror}") from exc
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_ms / 1000.0,
                isolation_level=None,  # explicit BEGIN IMMEDIATE ... COMMIT around every write
                check_same_thread=False,  # created here, then used by the worker thread only
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the conversation database {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("conversation database %s runs in %s mode, not WAL", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # what a purge deletes is overwritten with zeros, not left readable in free pages
            conn.execute("PRAGMA secure_delete = ON")
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._error(exc, "opening") from exc
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"conversation database {self.path} has schema version {version}, newer than this "
                f"gateway understands ({SCHEMA_VERSION}); upgrade the gateway or point "
                "context.sqlite_path at another file"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with immediate(conn):
                run_script(conn, _MIGRATIONS[target])
                conn.execute(f"PRAGMA user_version = {target}")
            log.info("conversation database %s migrated to schema %d", self.path, target)

    def _error(self, exc: sqlite3.Error, doing: str) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreError(
                f"conversation database {self.path} stayed locked by another process for more than "
                f"{self.busy_timeout_ms} ms while {doing}; nothing was written. Another program "
                "holds it open in a transaction: stop it, or raise context.busy_timeout_ms"
            )
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text or "corrupt" in text
        ):
            return StoreError(
                f"conversation database {self.path} is corrupt or not a SQLite database ({text}); "
                "move the file aside (keep it for inspection) and restart: the gateway creates a "
                "new empty one. Or point context.sqlite_path at another file"
            )
        return StoreError(f"conversation database {self.path}: {text} while {doing}")

    # -- running on the worker thread --------------------------------------------------

    async def _run(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise self._error(exc, doing) from exc

        if self._conn is None:
            raise StoreError(f"conversation store {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call)

    # -- the ContextStore protocol -----------------------------------------------------

    async def create(
        self, *, caller_id: str = "", customer_id: str = "", channel: str = ""
    ) -> ConversationRecord:
        record = new_record(caller_id=caller_id, customer_id=customer_id, channel=channel, now=self.clock())
        text = record_to_json(record, self.redactor)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO conversations (id, created_at, updated_at, customer_id, caller_id, status,"
                " version, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.created_at, record.updated_at, record.customer_id,
                 record.caller_id, record.status, record.version, text),
            )

        await self._run("creating a conversation", lambda conn: write(conn, insert))
        return record

    async def get(self, conversation_id: str) -> ConversationRecord | None:
        def select(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            return row[0] if row else None

        text = await self._run("reading a conversation", select)
        return self._load(text) if text is not None else None

    async def save(self, record: ConversationRecord) -> None:
        expected = record.version
        stored = saved_copy(record, self.clock())
        updated_at = stored.updated_at
        text = record_to_json(stored, self.redactor)

        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE conversations SET updated_at = ?, customer_id = ?, caller_id = ?, status = ?,"
                " version = ?, record = ? WHERE id = ? AND version = ?",
                (updated_at, record.customer_id, record.caller_id, record.status, stored.version,
                 text, record.id, expected),
            )
            if cur.rowcount == 1:
                return
            row = conn.execute("SELECT version FROM conversations WHERE id = ?", (record.id,)).fetchone()
            if row is None:
                raise not_stored(record.id)
            raise concurrent_update(record.id, row[0], expected)

        await self._run("saving a conversation", lambda conn: write(conn, update))
        record.version = stored.version
        record.updated_at = updated_at

    async def find_recent(
        self, *, customer_id: str = "", caller_id: str = "", within_seconds: float
    ) -> ConversationRecord | None:
        since = self.clock() - within_seconds

        def select(conn: sqlite3.Connection) -> str | None:
            for column, value in (("customer_id", customer_id), ("caller_id", caller_id)):
                if not value:
                    continue
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM conversations WHERE {column} = ? AND updated_at >= ?"
                    " AND status != 'closed' ORDER BY updated_at DESC LIMIT 1",
                    (value, since),
                ).fetchone()
                if row:
                    return row[0]
            return None

        text = await self._run("looking up a recent conversation", select)
        return self._load(text) if text is not None else None

    async def append(
        self,
        conversation_id: str,
        *,
        channel: str,
        kind: str,
        payload: dict[str, Any],
        sensitive: Iterable[str] = (),
    ) -> LoggedEvent:
        clean, text = event_payload(self.redactor, conversation_id, payload, sensitive)
        at = self.clock()

        def insert(conn: sqlite3.Connection) -> int:
            if conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
                raise not_stored(conversation_id, event=True)
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO events (conversation_id, seq, at, channel, kind, payload) VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, seq, at, channel, kind, text),
            )
            return int(seq)

        seq = await self._run("appending to the event log", lambda conn: write(conn, insert))
        return LoggedEvent(seq=seq, conversation_id=conversation_id, at=at, channel=channel, kind=kind, payload=clean)

    async def events(self, conversation_id: str, *, limit: int | None = None) -> list[LoggedEvent]:
        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if limit is None:
                return conn.execute(
                    "SELECT seq, at, channel, kind, payload FROM events WHERE conversation_id = ?"
                    " ORDER BY seq", (conversation_id,)
                ).fetchall()
            rows = conn.execute(
                "SELECT seq, at, channel, kind, payload FROM events WHERE conversation_id = ?"
                " ORDER BY seq DESC LIMIT ?", (conversation_id, max(0, limit))
            ).fetchall()
            return rows[::-1]

        rows = await self._run("reading the event log", select)
        return [
            LoggedEvent(seq=int(seq), conversation_id=conversation_id, at=float(at), channel=channel,
                        kind=kind, payload=json.loads(payload))
            for seq, at, channel, kind, payload in rows
        ]

    async def recent(self, limit: int = 50) -> list[ConversationRecord]:
        def select(conn: sqlite3.Connection) -> list[tuple[str]]:
            return conn.execute(
                f"SELECT {_COLUMNS} FROM conversations ORDER BY updated_at DESC LIMIT ?", (max(0, limit),)
            ).fetchall()

        rows = await self._run("listing recent conversations", select)
        return [self._load(row[0]) for row in rows]

    # -- store-wide operations (gateway.context.lifecycle) -----------------------------

    async def conversations_between(self, since: float, until: float, *,
                                    limit: int = MAX_SCAN) -> list[ConversationRecord]:
        texts = await self._run("scanning conversations",
                                lambda conn: lifecycle.records_between(conn, since, until, min(limit, MAX_SCAN)))
        return [self._load(t) for t in texts]

    async def conversation_ids(self, *, customer_id: str = "", caller_ids: Iterable[str] = ()) -> list[str]:
        numbers = list(caller_ids)
        return await self._run("finding a customer's conversations",
                               lambda conn: lifecycle.ids_for(conn, customer_id, numbers))

    async def feed(self, after: str = "", *, limit: int = 100) -> list[FeedEntry]:
        rows = await self._run("reading the feed",
                               lambda conn: lifecycle.feed_after(conn, after, max(1, min(limit, MAX_FEED_BATCH))))
        return [FeedEntry(str(pos), LoggedEvent(seq=int(seq), conversation_id=cid, at=float(at), channel=channel,
                                                kind=kind, payload=json.loads(payload)))
                for pos, cid, seq, at, channel, kind, payload in rows]

    async def feed_head(self) -> str:
        return await self._run("reading the feed", lifecycle.feed_head)

    async def erase_conversations(self, ids: Iterable[str], *, actor: str, reason: str) -> PurgeCounts:
        wanted = list(dict.fromkeys(ids))
        now = self.clock()
        return await self._run("erasing conversations",
                               lambda conn: lifecycle.erase(conn, wanted, actor=actor, reason=reason, now=now))

    async def expire(self, cutoffs: Cutoffs, *, actor: str) -> PurgeCounts:
        now = self.clock()
        return await self._run("applying retention", lambda conn: lifecycle.expire(conn, cutoffs, actor=actor, now=now))

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers (start-up checks, ``doctor``)."""
        await self._run("checking the database", lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)

    def _load(self, text: str) -> ConversationRecord:
        return load_record(text, f"conversation database {self.path}")
