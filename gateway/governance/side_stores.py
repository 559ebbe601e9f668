"""The gateway's smaller stores, as erasure and retention reach them.

Beside the context store and the audit log the gateway keeps, in the data directory or in Redis:

| store | where | holds |
| --- | --- | --- |
| SMS outbox, threads, reminders | ``sms.db`` (always SQLite) | message bodies, numbers, the number -> conversation map, reminder state |
| used follow-up links | ``links.db`` or ``{p}link-used:<nonce>`` | nonce -> conversation id (until the link's expiry) |
| counters and locks | ``counters.db`` or ``{p}hits:<key>``, ``{p}lock:<key>`` | failed checks per customer, codes sent, outbound per conversation |
| agent assignments | ``assignments.db`` or ``{p}assigned:<conversation>`` | which agents a conversation was routed to |
| the agents' queue | ``queue.db`` or ``{p}queue:entry:<conversation>``, ``{p}queue:ids`` | a waiting or held conversation: the customer's display name, reason, intent |
| booked callbacks | ``callbacks.db`` or ``{p}callbacks:due``, ``{p}callbacks:entries`` | when to call a conversation back, and its queue |
| the do-not-call list | ``dnc.db`` or Redis | numbers that opted out: **kept** by erasure, so the gateway never calls them again |

Each function opens its own connection (``secure_delete`` on, the WAL emptied afterwards), so
``voicegw erase`` works beside a running ``voicegw serve``. Missing files count as empty.
The counter keys are the ones :mod:`gateway.core.verification` and :mod:`gateway.core.outbound`
write (:data:`CUSTOMER_COUNTERS`, :data:`CONVERSATION_COUNTERS`).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Iterable

from gateway.context.lifecycle import PurgeCounts

SMS_FILE = "sms.db"
LINKS_FILE = "links.db"
COUNTERS_FILE = "counters.db"
ASSIGNMENTS_FILE = "assignments.db"
QUEUE_FILE = "queue.db"  # gateway.agents.queue_store.QUEUE_FILE
CALLBACKS_FILE = "callbacks.db"  # gateway.context.callbacks.CALLBACKS_FILE
LINK_PREFIX = "voicegw:link-used:"
REDIS_PREFIX = "voicegw:"

CUSTOMER_COUNTERS = ("verify:{}", "code-sent:{}", "code-wrong:{}")
"""Counter and lock keys per customer id (failed checks, the lockout, one-time codes)."""
CONVERSATION_COUNTERS = ("out:call:conv:{}", "out:sms:conv:{}")
"""Counter keys per conversation id (outbound calls and SMS it caused)."""

COUNTER_WINDOW_SECONDS = 2 * 86400.0
"""Hits older than this count in no window the gateway uses (the longest is an hour): retention drops them."""


def _open(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _delete(conn: sqlite3.Connection, sql: str, args: Iterable[object]) -> int:
    return int(conn.execute(sql, tuple(args)).rowcount)


def _finish(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def erase_sqlite(data_dir: Path, conversation_ids: list[str], numbers: list[str], customer_id: str,
                 *, redis: bool) -> PurgeCounts:
    """Delete what the SQLite side stores hold of these conversations, numbers and customer
    (``redis``: links, counters and assignments live in Redis instead, only the outbox here)."""
    counts = PurgeCounts()
    with closing(_open(data_dir / SMS_FILE) or sqlite3.connect(":memory:")) as conn:
        tables = _tables(conn)
        conn.execute("BEGIN IMMEDIATE")
        for cid in conversation_ids:
            if "messages" in tables:
                counts.add("sms_messages", _delete(conn, "DELETE FROM messages WHERE conversation_id = ?", [cid]))
            if "threads" in tables:
                counts.add("sms_threads", _delete(conn, "DELETE FROM threads WHERE conversation_id = ?", [cid]))
            if "outreach" in tables:
                counts.add("reminders", _delete(conn, "DELETE FROM outreach WHERE conversation_id = ?", [cid]))
        for number in numbers:
            if "messages" in tables:
                counts.add("sms_messages", _delete(conn, "DELETE FROM messages WHERE to_number = ? OR sender = ?",
                                                   [number, number]))
            if "threads" in tables:
                counts.add("sms_threads", _delete(conn, "DELETE FROM threads WHERE number = ?", [number]))
            if "outreach" in tables:
                counts.add("reminders", _delete(conn, "DELETE FROM outreach WHERE number = ?", [number]))
        conn.execute("COMMIT")
        _finish(conn)
    if redis:
        return counts
    with closing(_open(data_dir / LINKS_FILE) or sqlite3.connect(":memory:")) as conn:
        if "used_links" in _tables(conn):
            for cid in conversation_ids:
                counts.add("used_links", _delete(conn, "DELETE FROM used_links WHERE conversation_id = ?", [cid]))
            _finish(conn)
    keys = [k.format(customer_id) for k in CUSTOMER_COUNTERS if customer_id]
    keys += [k.format(cid) for k in CONVERSATION_COUNTERS for cid in conversation_ids]
    with closing(_open(data_dir / COUNTERS_FILE) or sqlite3.connect(":memory:")) as conn:
        tables = _tables(conn)
        for key in keys:
            if "hits" in tables:
                counts.add("counter_hits", _delete(conn, "DELETE FROM hits WHERE key = ?", [key]))
            if "locks" in tables:
                counts.add("locks", _delete(conn, "DELETE FROM locks WHERE key = ?", [key]))
        _finish(conn)
    with closing(_open(data_dir / ASSIGNMENTS_FILE) or sqlite3.connect(":memory:")) as conn:
        if "assignments" in _tables(conn):
            for cid in conversation_ids:
                counts.add("assignments", _delete(conn, "DELETE FROM assignments WHERE conversation_id = ?", [cid]))
            _finish(conn)
    with closing(_open(data_dir / CALLBACKS_FILE) or sqlite3.connect(":memory:")) as conn:
        if "callbacks" in _tables(conn):
            for cid in conversation_ids:
                counts.add("callbacks", _delete(conn, "DELETE FROM callbacks WHERE conversation_id = ?", [cid]))
            _finish(conn)
    with closing(_open(data_dir / QUEUE_FILE) or sqlite3.connect(":memory:")) as conn:
        if "queue" in _tables(conn):  # the agents' queue entry keeps the customer's name and reason
            for cid in conversation_ids:
                counts.add("queue_entries", _delete(conn, "DELETE FROM queue WHERE conversation_id = ?", [cid]))
            _finish(conn)
    return counts


async def erase_redis(url: str, conversation_ids: list[str], customer_id: str) -> PurgeCounts:
    """Delete what Redis holds of these conversations and customer beside the context store."""
    from gateway.context.redis_store import connect

    counts = PurgeCounts()
    r = connect(url)
    try:
        keys = [REDIS_PREFIX + kind + ":" + k.format(customer_id) for k in CUSTOMER_COUNTERS if customer_id
                for kind in ("hits", "lock")]
        keys += [REDIS_PREFIX + "hits:" + k.format(cid) for k in CONVERSATION_COUNTERS for cid in conversation_ids]
        for key in keys:
            counts.add("counters", int(await r.delete(key)))
        for cid in conversation_ids:
            counts.add("assignments", int(await r.delete(f"{REDIS_PREFIX}assigned:{cid}")))
            counts.add("queue_entries", int(await r.delete(f"{REDIS_PREFIX}queue:entry:{cid}")))
            await r.zrem(f"{REDIS_PREFIX}queue:ids", cid)
            counts.add("callbacks", int(await r.hdel(f"{REDIS_PREFIX}callbacks:entries", cid)))
            await r.zrem(f"{REDIS_PREFIX}callbacks:due", cid)
        wanted = tuple(f"{cid}|" for cid in conversation_ids)
        if wanted:
            async for key in r.scan_iter(match=LINK_PREFIX + "*", count=500):
                value = await r.get(key)
                if value is not None and value.startswith(wanted):
                    counts.add("used_links", int(await r.delete(key)))
    finally:
        await r.aclose()
    return counts


def expire_sqlite(data_dir: Path, *, sms_before: float, links_before: float, counters_before: float,
                  assignments_before: float, redis: bool) -> PurgeCounts:
    """Retention of the side stores: old SMS, threads and reminders; used links past any expiry;
    counter hits past every window; assignments past their grant."""
    counts = PurgeCounts()
    with closing(_open(data_dir / SMS_FILE) or sqlite3.connect(":memory:")) as conn:
        tables = _tables(conn)
        if sms_before > 0:
            if "messages" in tables:
                counts.add("sms_messages", _delete(conn, "DELETE FROM messages WHERE created_at < ?", [sms_before]))
            if "threads" in tables:
                counts.add("sms_threads", _delete(conn, "DELETE FROM threads WHERE updated_at < ?", [sms_before]))
            if "outreach" in tables:
                counts.add("reminders", _delete(conn, "DELETE FROM outreach WHERE updated_at < ?", [sms_before]))
            _finish(conn)
    if redis:
        return counts
    for name, table, column, before in ((LINKS_FILE, "used_links", "used_at", links_before),
                                        (COUNTERS_FILE, "hits", "at", counters_before),
                                        (COUNTERS_FILE, "locks", "until", counters_before),
                                        (ASSIGNMENTS_FILE, "assignments", "at", assignments_before)):
        with closing(_open(data_dir / name) or sqlite3.connect(":memory:")) as conn:
            if table in _tables(conn):
                counts.add(table, _delete(conn, f"DELETE FROM {table} WHERE {column} < ?", [before]))
                _finish(conn)
    return counts
