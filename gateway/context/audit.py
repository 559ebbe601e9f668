"""The audit log: who read which conversation, how, when and from where; sign-ins and refusals.

Any part of the gateway writes one entry per thing worth answering for later::

    await audit.write(actor="alice", role="agent", action="read", conversation_id=cid,
                      detail={"via": "rest", "address": "10.0.0.7"})
    await audit.write(actor="system", role="system", action="verification_locked", detail={...})
    await audit.entries(conversation_id=cid, limit=50)     # newest first, at most MAX_ENTRIES

Like the conversation event log it is append-only, and ``open_audit(settings)``
(:mod:`gateway.context`) picks the backend the context store uses:

- SQLite: ``<data_dir>/audit.db``, one table whose triggers refuse UPDATE and DELETE; every
  call runs on one worker thread, so a locked file never stalls the event loop.
- Redis (several nodes): ``{p}audit:day:YYYY-MM-DD``, a stream per UTC day holding every entry,
  and ``{p}audit:conv:{id}``, a stream per conversation with the same entry (what the
  per-conversation read uses); both are written in one MULTI. Redis has no triggers: to make
  the log append-only there too, give the gateway's Redis user an ACL selector that allows only
  XADD, XREVRANGE and XRANGE on ``{p}audit:*``, and run retention (``retention.enabled: false``
  in serve, ``voicegw retention`` from cron) and ``voicegw erase`` as a user that may also XDEL,
  XTRIM and DEL there.

Its retention is its own (``retention.audit_days``, :meth:`purge_before`), and an erasure keeps
its entries but replaces the customer's identifiers inside them (:meth:`scrub`); on SQLite both
go through a guarded purge like the event log's.

``detail`` is the caller's: never put a token, a PIN or a card number there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Protocol, TypeVar

from gateway.context.store import StoreError
from gateway.sqlite_tx import immediate, run_script, write

log = logging.getLogger(__name__)
T = TypeVar("T")

AUDIT_FILE = "audit.db"
"""The SQLite audit log's file in the data directory."""

MAX_ENTRIES = 1000
"""Most entries one read returns: an admin page or an API call never loads a whole log."""

MAX_FIELD_CHARS = 200
"""Longest actor, role, action or conversation id kept (ids are 32 characters; names shorter)."""

MAX_DETAIL_BYTES = 4096
"""Largest detail kept as given; a bigger one is replaced by its keys so the entry still lands."""

REDIS_SCAN_DAYS = 31
"""Days of day-streams an unfiltered Redis read looks back through (the latest entries overall)."""

SCHEMA_VERSION = 2
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE audit (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        at              REAL NOT NULL,
        actor           TEXT NOT NULL,
        role            TEXT NOT NULL,
        action          TEXT NOT NULL,
        conversation_id TEXT NOT NULL DEFAULT '',
        detail          TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_conversation ON audit (conversation_id, seq);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # 2: the audit log's own retention and the scrubbing of an erased customer's identifiers go
    # through a guarded purge, like the conversation event log (gateway.context.lifecycle)
    2: """
    CREATE TABLE purge_guard (purge_id INTEGER NOT NULL);
    CREATE TABLE purges (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 0);
    DROP TRIGGER audit_no_update;
    DROP TRIGGER audit_no_delete;
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit WHEN NOT EXISTS (SELECT 1 FROM purge_guard) BEGIN SELECT RAISE(ABORT, 'the audit log is append-only (its retention goes through a guarded purge)'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit WHEN NOT EXISTS (SELECT 1 FROM purge_guard) BEGIN SELECT RAISE(ABORT, 'the audit log is append-only (its retention goes through a guarded purge)'); END;
    """,
}

ERASED = "[erased]"
"""What an erased customer's identifier becomes inside an audit entry's detail."""


def scrub_detail(detail: Any, needles: tuple[str, ...]) -> Any:
    """``detail`` with every string that contains one of ``needles`` replaced by :data:`ERASED`."""
    if isinstance(detail, dict):
        return {k: scrub_detail(v, needles) for k, v in detail.items()}
    if isinstance(detail, list):
        return [scrub_detail(v, needles) for v in detail]
    if isinstance(detail, str) and any(n and n in detail for n in needles):
        return ERASED
    return detail


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log. ``id`` orders entries within one backend."""

    id: str
    at: float
    actor: str
    role: str
    action: str
    conversation_id: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The entry as the audit API shows it."""
        return {"id": self.id, "at": datetime.fromtimestamp(self.at, tz=timezone.utc).isoformat(timespec="milliseconds"),
                "actor": self.actor, "role": self.role, "action": self.action,
                "conversation_id": self.conversation_id, "detail": dict(self.detail)}


class AuditLog(Protocol):
    """What every audit backend offers."""

    async def write(self, *, actor: str, role: str, action: str, conversation_id: str = "",
                    detail: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append one entry; :class:`StoreError` when it could not be written."""
        ...

    async def entries(self, *, conversation_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries (of one conversation when given), newest first."""
        ...

    async def close(self) -> None:
        ...


def _clip(value: str, what: str) -> str:
    text = str(value)
    if not text and what in ("actor", "role", "action"):
        raise ValueError(f"an audit entry needs a non-empty {what}")
    return text[:MAX_FIELD_CHARS]


def _detail_json(detail: Mapping[str, Any] | None) -> str:
    text = json.dumps(dict(detail or {}), separators=(",", ":"), sort_keys=True, default=str)
    if len(text.encode("utf-8")) > MAX_DETAIL_BYTES:
        keys = sorted(str(k)[:MAX_FIELD_CHARS] for k in (detail or {}))[:20]
        text = json.dumps({"truncated": True, "keys": keys}, separators=(",", ":"))
    return text


def _limit(limit: int) -> int:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return min(int(limit), MAX_ENTRIES)


class SqliteAuditLog:
    """:class:`AuditLog` in one SQLite file (WAL), append-only by triggers."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sqlite")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000.0, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the audit log {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: survives a process crash
            conn.execute("PRAGMA secure_delete = ON")  # purged entries are overwritten, not left in free pages
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"audit log {self.path} has schema version {version}, newer than this gateway "
                                 f"understands ({SCHEMA_VERSION}); upgrade the gateway")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                with immediate(conn):
                    run_script(conn, _MIGRATIONS[target])
                    conn.execute(f"PRAGMA user_version = {target}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"audit log {self.path} cannot be used ({exc}); move the file aside "
                             "(keep it: it is evidence) and restart") from exc
        self._conn: sqlite3.Connection | None = conn

    async def _run(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"audit log {self.path} is closed")

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"audit log {self.path}: {exc} while {doing}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def write(self, *, actor: str, role: str, action: str, conversation_id: str = "",
                    detail: Mapping[str, Any] | None = None) -> AuditEntry:
        row = (self.clock(), _clip(actor, "actor"), _clip(role, "role"), _clip(action, "action"),
               _clip(conversation_id, "conversation_id"), _detail_json(detail))

        def insert(conn: sqlite3.Connection) -> int:
            cur = conn.execute("INSERT INTO audit (at, actor, role, action, conversation_id, detail)"
                               " VALUES (?, ?, ?, ?, ?, ?)", row)
            return int(cur.lastrowid or 0)

        seq = await self._run("writing an entry", lambda conn: write(conn, insert))
        return AuditEntry(str(seq), row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))

    async def entries(self, *, conversation_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        count = _limit(limit)

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            sql = "SELECT seq, at, actor, role, action, conversation_id, detail FROM audit"
            args: tuple[Any, ...] = (count,)
            if conversation_id is not None:
                sql += " WHERE conversation_id = ?"
                args = (conversation_id, count)
            return conn.execute(sql + " ORDER BY seq DESC LIMIT ?", args).fetchall()

        rows = await self._run("reading entries", select)
        return [AuditEntry(str(r[0]), float(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def _guarded(self, actor: str, reason: str, work: Callable[[sqlite3.Connection], int]) -> Callable[
            [sqlite3.Connection], int]:
        def run(conn: sqlite3.Connection) -> int:
            with immediate(conn):
                purge_id = conn.execute("INSERT INTO purges (at, actor, reason) VALUES (?, ?, ?)",
                                        (self.clock(), actor, reason)).lastrowid
                conn.execute("INSERT INTO purge_guard (purge_id) VALUES (?)", (purge_id,))
                n = work(conn)
                conn.execute("DELETE FROM purge_guard")
                if n or reason != "retention":
                    conn.execute("UPDATE purges SET count = ? WHERE id = ?", (n, purge_id))
                else:  # an hourly run that found nothing leaves no row
                    conn.execute("DELETE FROM purges WHERE id = ?", (purge_id,))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return n
        return run

    async def purge_before(self, cutoff: float, *, actor: str) -> int:
        """Delete entries older than ``cutoff`` (the audit log's own retention); how many went."""
        return await self._run("purging old entries", self._guarded(actor, "retention", lambda conn: conn.execute(
            "DELETE FROM audit WHERE at < ?", (cutoff,)).rowcount))

    async def scrub(self, conversation_ids: list[str], needles: tuple[str, ...], *, actor: str) -> int:
        """Keep the entries (who read what stays answerable) but replace the erased customer's
        identifiers in their detail; how many entries changed."""
        def work(conn: sqlite3.Connection) -> int:
            n = 0
            for seq, detail in conn.execute("SELECT seq, detail FROM audit").fetchall():
                clean = json.dumps(scrub_detail(json.loads(detail), needles), separators=(",", ":"), sort_keys=True)
                if clean != detail:
                    conn.execute("UPDATE audit SET detail = ? WHERE seq = ?", (clean, seq))
                    n += 1
            return n

        return await self._run("scrubbing entries", self._guarded(actor, "erasure", work))

    async def entries_of(self, conversation_ids: list[str]) -> list[AuditEntry]:
        """Every entry about these conversations, oldest first (subject access)."""
        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = []
            for cid in conversation_ids:
                rows += conn.execute("SELECT seq, at, actor, role, action, conversation_id, detail FROM audit"
                                     " WHERE conversation_id = ? ORDER BY seq LIMIT ?", (cid, MAX_ENTRIES)).fetchall()
            return rows

        rows = await self._run("reading entries", select)
        return [AuditEntry(str(r[0]), float(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


# One entry into the day stream and, under the same id, into the conversation's stream (so a
# read by conversation returns the id the write did), atomically. A conversation stream whose
# last id is already later (only after an erasure rebuilt it) gets a fresh one instead.
_ADD_SCRIPT = """
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV))
if KEYS[2] ~= '' then
  local ok = pcall(redis.call, 'XADD', KEYS[2], id, unpack(ARGV))
  if not ok then redis.call('XADD', KEYS[2], '*', unpack(ARGV)) end
end
return id
"""


class RedisAuditLog:
    """:class:`AuditLog` in Redis streams: one per UTC day, one per conversation."""

    def __init__(self, url: str, *, prefix: str = "voicegw:", clock: Callable[[], float] = time.time) -> None:
        from gateway.context.redis_store import connect

        self.url = url
        self.prefix = prefix
        self.clock = clock
        self._redis = connect(url)
        self._add = self._redis.register_script(_ADD_SCRIPT)

    def _day_key(self, at: float) -> str:
        return f"{self.prefix}audit:day:{datetime.fromtimestamp(at, tz=timezone.utc):%Y-%m-%d}"

    def _conv_key(self, conversation_id: str) -> str:
        return f"{self.prefix}audit:conv:{conversation_id}"

    async def _call(self, doing: str, op: Awaitable[T]) -> T:
        from redis.exceptions import RedisError

        from gateway.context.redis_store import safe_url

        try:
            return await op
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis audit log at {safe_url(self.url)} failed while {doing}: {exc}") from exc

    async def write(self, *, actor: str, role: str, action: str, conversation_id: str = "",
                    detail: Mapping[str, Any] | None = None) -> AuditEntry:
        at = self.clock()
        fields = {"at": repr(at), "actor": _clip(actor, "actor"), "role": _clip(role, "role"),
                  "action": _clip(action, "action"), "conversation_id": _clip(conversation_id, "conversation_id"),
                  "detail": _detail_json(detail)}

        keys = [self._day_key(at), self._conv_key(fields["conversation_id"]) if fields["conversation_id"] else ""]
        args = [item for pair in fields.items() for item in pair]
        entry_id = await self._call("writing an entry", self._add(keys=keys, args=args))
        return self._entry(str(entry_id), fields)

    @staticmethod
    def _entry(entry_id: str, fields: Mapping[str, str]) -> AuditEntry:
        return AuditEntry(entry_id, float(fields["at"]), fields["actor"], fields["role"], fields["action"],
                          fields.get("conversation_id", ""), json.loads(fields.get("detail", "{}")))

    async def entries(self, *, conversation_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        count = _limit(limit)
        if conversation_id is not None:
            rows = await self._call("reading entries",
                                    self._redis.xrevrange(self._conv_key(conversation_id), count=count))
            return [self._entry(str(i), f) for i, f in rows]
        out: list[AuditEntry] = []
        day = datetime.fromtimestamp(self.clock(), tz=timezone.utc)
        for back in range(REDIS_SCAN_DAYS):
            key = f"{self.prefix}audit:day:{day - timedelta(days=back):%Y-%m-%d}"
            rows = await self._call("reading entries", self._redis.xrevrange(key, count=count - len(out)))
            out.extend(self._entry(str(i), f) for i, f in rows)
            if len(out) >= count:
                break
        return out

    async def purge_before(self, cutoff: float, *, actor: str) -> int:
        """Delete the day streams of days wholly before ``cutoff`` and, from each conversation's
        stream, the entries written before it (by their ``at``); the streams trimmed are rebuilt
        so the removed entries' bytes go too. How many day-stream entries went."""
        from gateway.context.redis_lifecycle import compact_stream

        n = 0
        cutoff_day = f"{datetime.fromtimestamp(cutoff, tz=timezone.utc):%Y-%m-%d}"
        async for key in self._redis.scan_iter(match=f"{self.prefix}audit:day:*", count=500):
            if key.rsplit(":", 1)[-1] < cutoff_day:
                n += int(await self._call("purging old entries", self._redis.xlen(key)))
                await self._call("purging old entries", self._redis.delete(key))
        async for key in self._redis.scan_iter(match=f"{self.prefix}audit:conv:*", count=500):
            start, keep = "-", None
            while keep is None:
                rows = await self._call("purging old entries", self._redis.xrange(key, min=start, max="+", count=500))
                keep = next((i for i, f in rows if float(f.get("at", 0)) >= cutoff), None)
                if keep is None and len(rows) < 500:
                    break
                if rows:
                    start = "(" + rows[-1][0]
            if keep is None:
                await self._call("purging old entries", self._redis.delete(key))
            elif keep != (await self._call("purging old entries", self._redis.xrange(key, count=1)))[0][0]:
                await self._call("purging old entries", self._redis.xtrim(key, minid=keep, approximate=False))
                await self._call("purging old entries", compact_stream(self._redis, key))
        return n

    async def scrub(self, conversation_ids: list[str], needles: tuple[str, ...], *, actor: str) -> int:
        """Rewrite the entries whose detail names the erased customer: stream entries cannot be
        edited, so each is deleted and added again scrubbed, with ``replaces`` naming its old id."""
        from gateway.context.redis_lifecycle import compact_stream

        n = 0
        keys = [key async for key in self._redis.scan_iter(match=f"{self.prefix}audit:*", count=500)]
        for key in keys:
            start, changed = "-", False
            while True:
                rows = await self._call("scrubbing entries", self._redis.xrange(key, min=start, max="+", count=500))
                for entry_id, fields in rows:
                    detail = json.loads(fields.get("detail", "{}"))
                    clean = scrub_detail(detail, needles)
                    if clean != detail:
                        copy = dict(fields, detail=json.dumps(clean, separators=(",", ":"), sort_keys=True),
                                    replaces=entry_id)
                        pipe = self._redis.pipeline(transaction=True)
                        pipe.xdel(key, entry_id)
                        pipe.xadd(key, copy)
                        await self._call("scrubbing entries", pipe.execute())
                        n += 1
                        changed = True
                if len(rows) < 500:
                    break
                start = "(" + rows[-1][0]
            if changed:  # the deleted originals' bytes go too
                await self._call("scrubbing entries", compact_stream(self._redis, key))
        return n

    async def entries_of(self, conversation_ids: list[str]) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        for cid in conversation_ids:
            rows = await self._call("reading entries", self._redis.xrange(self._conv_key(cid), count=MAX_ENTRIES))
            out += [self._entry(str(i), f) for i, f in rows]
        return out

    async def close(self) -> None:
        await self._redis.aclose()
