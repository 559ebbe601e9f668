"""The store-wide operations of the SQLite context store (:mod:`gateway.context.lifecycle`).

Every function takes the store's connection and runs on the store's worker thread. Purges go
through :func:`guarded`: the only way the event log's triggers let an UPDATE or a DELETE through.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from gateway.context.lifecycle import Cutoffs, PurgeCounts, strip_personal
from gateway.context.store import dumps, load_record, record_to_json
from gateway.sqlite_tx import immediate

ERASE_BATCH = 500
"""Conversation ids per DELETE statement (SQLite's default limit on parameters is 32766)."""


@contextmanager
def guarded(conn: sqlite3.Connection, *, actor: str, reason: str, now: float,
            counts: PurgeCounts) -> Iterator[int]:
    """One purge in one transaction: a ``purges`` row, the guard that lets the event log's
    triggers pass UPDATE and DELETE, the caller's work, the guard removed, the counts kept."""
    with immediate(conn):
        purge_id = int(conn.execute("INSERT INTO purges (at, actor, reason) VALUES (?, ?, ?)",
                                    (now, actor, reason)).lastrowid or 0)
        conn.execute("INSERT INTO purge_guard (purge_id) VALUES (?)", (purge_id,))
        yield purge_id
        conn.execute("DELETE FROM purge_guard")
        if counts.as_dict() or reason != "retention":
            conn.execute("UPDATE purges SET counts = ? WHERE id = ?", (json.dumps(counts.as_dict()), purge_id))
        else:  # an hourly run that found nothing leaves no row
            conn.execute("DELETE FROM purges WHERE id = ?", (purge_id,))
    # the WAL still holds the pages as they were before: fold it into the file and empty it
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def records_between(conn: sqlite3.Connection, since: float, until: float, limit: int) -> list[str]:
    rows = conn.execute("SELECT record FROM conversations WHERE updated_at >= ? AND updated_at <= ?"
                        " ORDER BY updated_at LIMIT ?", (since, until, max(0, limit))).fetchall()
    return [r[0] for r in rows]


def ids_for(conn: sqlite3.Connection, customer_id: str, caller_ids: Iterable[str]) -> list[str]:
    found: list[str] = []
    if customer_id:
        found += [r[0] for r in conn.execute("SELECT id FROM conversations WHERE customer_id = ?", (customer_id,))]
    for number in caller_ids:
        if number:
            found += [r[0] for r in conn.execute("SELECT id FROM conversations WHERE caller_id = ?", (number,))]
    return list(dict.fromkeys(found))


def feed_after(conn: sqlite3.Connection, after: str, limit: int) -> list[tuple[Any, ...]]:
    position = int(after) if after else 0
    return conn.execute(
        "SELECT f.pos, e.conversation_id, e.seq, e.at, e.channel, e.kind, e.payload FROM feed f"
        " JOIN events e ON e.conversation_id = f.conversation_id AND e.seq = f.seq"
        " WHERE f.pos > ? ORDER BY f.pos LIMIT ?", (position, limit)).fetchall()


def feed_head(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT MAX(pos) FROM feed").fetchone()
    return str(row[0]) if row and row[0] is not None else ""


def erase(conn: sqlite3.Connection, ids: list[str], *, actor: str, reason: str, now: float) -> PurgeCounts:
    """Delete these conversations whole (records, events, feed entries)."""
    counts = PurgeCounts()
    with guarded(conn, actor=actor, reason=reason, now=now, counts=counts):
        for start in range(0, len(ids), ERASE_BATCH):
            batch = ids[start:start + ERASE_BATCH]
            marks = ",".join("?" * len(batch))
            counts.add("events", conn.execute(f"DELETE FROM events WHERE conversation_id IN ({marks})", batch).rowcount)
            counts.add("feed", conn.execute(f"DELETE FROM feed WHERE conversation_id IN ({marks})", batch).rowcount)
            counts.add("conversations",
                       conn.execute(f"DELETE FROM conversations WHERE id IN ({marks})", batch).rowcount)
    return counts


def _mark(conn: sqlite3.Connection, kind: str) -> float:
    row = conn.execute("SELECT upto FROM retention_marks WHERE kind = ?", (kind,)).fetchone()
    return float(row[0]) if row else float("-inf")


def _set_mark(conn: sqlite3.Connection, kind: str, upto: float) -> None:
    conn.execute("INSERT INTO retention_marks (kind, upto) VALUES (?, ?)"
                 " ON CONFLICT (kind) DO UPDATE SET upto = excluded.upto", (kind, upto))


def expire(conn: sqlite3.Connection, cutoffs: Cutoffs, *, actor: str, now: float) -> PurgeCounts:
    """Retention: whole conversations, then transcripts, then slots, then old feed entries.
    Transcripts and slots are processed once per conversation update (a mark remembers how far
    the last run went; a conversation updated since is processed again when it grows old)."""
    counts = PurgeCounts()
    with guarded(conn, actor=actor, reason="retention", now=now, counts=counts):
        if cutoffs.conversations > 0:
            old = [r[0] for r in conn.execute("SELECT id FROM conversations WHERE updated_at < ?",
                                              (cutoffs.conversations,))]
            for start in range(0, len(old), ERASE_BATCH):
                batch = old[start:start + ERASE_BATCH]
                marks = ",".join("?" * len(batch))
                counts.add("events", conn.execute(f"DELETE FROM events WHERE conversation_id IN ({marks})",
                                                  batch).rowcount)
                counts.add("feed", conn.execute(f"DELETE FROM feed WHERE conversation_id IN ({marks})",
                                                batch).rowcount)
                counts.add("conversations", conn.execute(f"DELETE FROM conversations WHERE id IN ({marks})",
                                                         batch).rowcount)
        if cutoffs.transcripts > 0:
            since = _mark(conn, "transcripts")
            rows = conn.execute(
                "SELECT e.conversation_id, e.seq, e.payload FROM events e JOIN conversations c"
                " ON c.id = e.conversation_id WHERE c.updated_at >= ? AND c.updated_at < ?",
                (since, cutoffs.transcripts)).fetchall()
            for conversation_id, seq, text in rows:
                payload = json.loads(text)
                stripped = strip_personal(payload)
                if stripped != payload:
                    conn.execute("UPDATE events SET payload = ? WHERE conversation_id = ? AND seq = ?",
                                 (dumps(stripped, "an expired event"), conversation_id, seq))
                    counts.add("transcript_events", 1)
            _set_mark(conn, "transcripts", cutoffs.transcripts)
        if cutoffs.slots > 0:
            since = _mark(conn, "slots")
            rows = conn.execute("SELECT id, record FROM conversations WHERE updated_at >= ? AND updated_at < ?",
                                (since, cutoffs.slots)).fetchall()
            for conversation_id, text in rows:
                record = load_record(text, "conversation database")
                if not record.slots and not record.trust and record.state == record.state.purged():
                    continue
                record.slots = {}
                record.trust = {}
                record.state = record.state.purged()
                record.version += 1
                conn.execute("UPDATE conversations SET record = ?, version = ? WHERE id = ?",
                             (record_to_json(record), record.version, conversation_id))
                counts.add("slots", 1)
            _set_mark(conn, "slots", cutoffs.slots)
        if cutoffs.feed > 0:
            counts.add("feed", conn.execute("DELETE FROM feed WHERE at < ?", (cutoffs.feed,)).rowcount)
    return counts
