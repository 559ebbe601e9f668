"""The local SMS outbox and the SMS thread map, both in one SQLite file in the data directory.

With no Twilio credentials configured (the embedded default) every outbound SMS is stored in
the outbox instead of being sent, and shown at ``/outbox`` and by ``voicegw outbox``; the whole
journey then works on a laptop. Messages sent through Twilio are recorded too (with their
Twilio SID), so the outbox is also the audit of what the gateway sent.

Bodies and redaction: a message of any real transport (``twilio``, ``twiml``, inbound from
Twilio) is a *record* of what went over the network, so its body is redacted before it is
written (card numbers, PINs, one-time codes, passwords ... as ``settings.redaction`` says);
the customer's phone got the real text. With the local ``outbox`` transport the outbox IS the
simulated handset: nothing was sent anywhere, the body is the only copy and the demo needs it
whole (the link in it is what the "customer" opens), so it is kept as written.

The thread map remembers which conversation last wrote to a phone number, so an SMS reply lands
in that conversation.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gateway.config import RedactionSettings
from gateway.context.redaction import Redactor

OUTBOX_FILE = "sms.db"
LOCAL_TRANSPORT = "outbox"
"""The simulated handset: bodies of this transport are kept as written (see the module docstring)."""
MAX_LISTED = 500
"""Most messages one listing returns (newest first)."""


@dataclass(frozen=True)
class OutboxMessage:
    """One outbound (or inbound) SMS as recorded."""

    id: int
    created_at: float
    direction: str
    to: str
    sender: str
    body: str
    conversation_id: str
    transport: str
    status: str
    provider_id: str


class Outbox:
    """Records SMS messages and the number-to-conversation thread map."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 redaction: RedactionSettings | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._redactor = Redactor(redaction)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: survives a process crash; a power cut may lose the last writes
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " created_at REAL, direction TEXT, to_number TEXT, sender TEXT, body TEXT,"
            " conversation_id TEXT, transport TEXT, status TEXT, provider_id TEXT)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS threads (number TEXT PRIMARY KEY, conversation_id TEXT,"
            " updated_at REAL)"
        )

    def record(
        self,
        *,
        direction: str,
        to: str,
        sender: str,
        body: str,
        conversation_id: str,
        transport: str,
        status: str,
        provider_id: str = "",
    ) -> int:
        """Store one message; returns its row id. The body of a message that went over a real
        transport is stored redacted; a local outbox message is stored as written."""
        if transport != LOCAL_TRANSPORT:
            body = self._redactor.redact_text(body)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO messages (created_at, direction, to_number, sender, body, conversation_id,"
                " transport, status, provider_id) VALUES (?,?,?,?,?,?,?,?,?)",
                (self._clock(), direction, to, sender, body, conversation_id, transport, status,
                 provider_id),
            )
            return int(cur.lastrowid or 0)

    def messages(self, *, to: str = "", limit: int = 100) -> list[OutboxMessage]:
        """Newest first; only those to (or from) ``to`` when given."""
        limit = max(1, min(limit, MAX_LISTED))
        query = ("SELECT id, created_at, direction, to_number, sender, body, conversation_id,"
                 " transport, status, provider_id FROM messages")
        args: tuple[object, ...] = ()
        if to:
            query += " WHERE to_number = ? OR sender = ?"
            args = (to, to)
        query += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, args + (limit,)).fetchall()
        return [OutboxMessage(*row) for row in rows]

    def remember_thread(self, number: str, conversation_id: str) -> None:
        """Replies from ``number`` now go to ``conversation_id``."""
        if not number or not conversation_id:
            return
        with self._lock:
            self._db.execute(
                "INSERT INTO threads (number, conversation_id, updated_at) VALUES (?,?,?)"
                " ON CONFLICT(number) DO UPDATE SET conversation_id=excluded.conversation_id,"
                " updated_at=excluded.updated_at",
                (number, conversation_id, self._clock()),
            )

    def thread_for(self, number: str, *, max_age_seconds: float) -> str:
        """The conversation that last wrote to ``number`` within ``max_age_seconds``, or ''."""
        with self._lock:
            row = self._db.execute(
                "SELECT conversation_id, updated_at FROM threads WHERE number = ?", (number,)
            ).fetchone()
        if row is None or self._clock() - float(row[1]) > max_age_seconds:
            return ""
        return str(row[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
