"""Campaigns, their contacts and every attempt, in one SQLite file in the data directory.

``<data_dir>/campaigns.db`` (WAL). Each change is one ``BEGIN IMMEDIATE`` transaction, so
several processes on the same data directory (``voicegw serve`` and ``voicegw campaign``) see
one consistent state. The step that matters, :meth:`CampaignStore.claim`, takes a contact for
its next attempt in one transaction that also checks the campaign is running, the contact is
still where the caller saw it, and the campaign's pace and concurrency leave room: two
runners can never claim the same attempt, nor together exceed the campaign's limits.

The runner lease (:mod:`gateway.digital.campaigns.lease`) keeps a second runner off the same
file; with the Redis backend the lease lives in Redis.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from gateway.context.store import StoreError
from gateway.digital.campaigns.model import (Attempt, AttemptState, Campaign, CampaignConfig, CampaignState, Contact,
                                             ContactStatus, Outcome)
from gateway.sqlite_tx import immediate, run_script

T = TypeVar("T")

CAMPAIGNS_FILE = "campaigns.db"
MAX_LISTED = 1000
"""Most attempts one listing returns."""
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE campaigns (name TEXT PRIMARY KEY, state TEXT NOT NULL, config TEXT NOT NULL,
                        created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE contacts (campaign TEXT NOT NULL, ref TEXT NOT NULL, phone TEXT NOT NULL,
                       customer_id TEXT NOT NULL DEFAULT '', name TEXT NOT NULL DEFAULT '',
                       tz TEXT NOT NULL DEFAULT '', text TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,
                       attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
                       conversation_id TEXT NOT NULL DEFAULT '', sms_sent INTEGER NOT NULL DEFAULT 0,
                       last_outcome TEXT NOT NULL DEFAULT '', PRIMARY KEY (campaign, ref));
CREATE INDEX contacts_due ON contacts (campaign, status, next_at);
CREATE TABLE attempts (campaign TEXT NOT NULL, ref TEXT NOT NULL, n INTEGER NOT NULL, kind TEXT NOT NULL,
                       state TEXT NOT NULL, outcome TEXT NOT NULL DEFAULT '', conversation_id TEXT NOT NULL DEFAULT '',
                       baseline INTEGER NOT NULL DEFAULT -1, started_at REAL NOT NULL,
                       placed_at REAL NOT NULL DEFAULT 0, ended_at REAL NOT NULL DEFAULT 0, node TEXT NOT NULL,
                       detail TEXT NOT NULL DEFAULT '', PRIMARY KEY (campaign, ref, n));
CREATE INDEX attempts_started ON attempts (campaign, started_at);
CREATE INDEX attempts_open ON attempts (campaign, state);
CREATE TABLE lease (name TEXT PRIMARY KEY, node TEXT NOT NULL, until REAL NOT NULL);
"""
_CONTACT_COLUMNS = ("campaign, ref, phone, customer_id, name, tz, text, status, attempts, next_at, conversation_id,"
                    " sms_sent, last_outcome")
_ATTEMPT_COLUMNS = ("campaign, ref, n, kind, state, outcome, conversation_id, baseline, started_at, placed_at,"
                    " ended_at, node, detail")
OPEN_STATES = (AttemptState.CLAIMED.value, AttemptState.PLACED.value)


class CampaignError(ValueError):
    """A request the campaigns cannot carry out (unknown campaign, a name taken, a limit); the
    message is fit for the person who asked."""


def _campaign(row: tuple[Any, ...]) -> Campaign:
    return Campaign(str(row[0]), CampaignState(row[1]), CampaignConfig(**json.loads(row[2])), float(row[3]))


def _contact(row: tuple[Any, ...]) -> Contact:
    return Contact(campaign=row[0], ref=row[1], phone=row[2], customer_id=row[3], name=row[4], tz=row[5],
                   text=row[6], status=ContactStatus(row[7]), attempts=int(row[8]), next_at=float(row[9]),
                   conversation_id=row[10], sms_sent=bool(row[11]), last_outcome=row[12])


def _attempt(row: tuple[Any, ...]) -> Attempt:
    return Attempt(campaign=row[0], ref=row[1], n=int(row[2]), kind=row[3], state=AttemptState(row[4]),
                   outcome=row[5], conversation_id=row[6], baseline=int(row[7]), started_at=float(row[8]),
                   placed_at=float(row[9]), ended_at=float(row[10]), node=row[11], detail=row[12])


class CampaignStore:
    """The campaigns file; every method is a coroutine running one transaction on a worker thread."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                 timeout=busy_timeout_ms / 1000)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: survives a process crash
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"campaigns file {self.path} has schema {version}, newer than this gateway")
            if version < SCHEMA_VERSION:
                with immediate(db):
                    if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                        run_script(db, _SCHEMA)
                        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"campaigns file {self.path} cannot be opened: {exc}") from exc
        self._db: sqlite3.Connection | None = db

    async def _tx(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            with self._lock:
                if self._db is None:
                    raise StoreError(f"campaigns file {self.path} is closed")
                try:
                    with immediate(self._db):
                        return fn(self._db)
                except sqlite3.Error as exc:
                    raise StoreError(f"campaigns file {self.path}: {exc} while {doing}") from exc

        return await asyncio.to_thread(work)

    async def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ campaigns
    async def create(self, name: str, config: CampaignConfig, now: float, *, max_campaigns: int) -> Campaign:
        def fn(db: sqlite3.Connection) -> Campaign:
            if db.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
                raise CampaignError(f"a campaign named {name!r} exists already")
            if db.execute("SELECT COUNT(*) FROM campaigns").fetchone()[0] >= max_campaigns:
                raise CampaignError(f"this gateway holds {max_campaigns} campaigns already (campaigns.max_campaigns)")
            db.execute("INSERT INTO campaigns (name, state, config, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                       (name, CampaignState.DRAFT.value, json.dumps(config.as_dict()), now, now))
            return Campaign(name, CampaignState.DRAFT, config, now)
        return await self._tx("creating a campaign", fn)

    async def get(self, name: str) -> Campaign | None:
        row = await self._tx("reading a campaign", lambda db: db.execute(
            "SELECT name, state, config, created_at FROM campaigns WHERE name = ?", (name,)).fetchone())
        return _campaign(row) if row else None

    async def campaigns(self, state: CampaignState | None = None) -> list[Campaign]:
        query, args = "SELECT name, state, config, created_at FROM campaigns", ()
        if state is not None:
            query, args = query + " WHERE state = ?", (state.value,)
        rows = await self._tx("listing campaigns", lambda db: db.execute(query + " ORDER BY created_at", args).fetchall())
        return [_campaign(r) for r in rows]

    async def set_state(self, name: str, state: CampaignState, now: float, *,
                        allowed_from: Iterable[CampaignState]) -> Campaign:
        allowed = {s.value for s in allowed_from}

        def fn(db: sqlite3.Connection) -> Campaign:
            row = db.execute("SELECT name, state, config, created_at FROM campaigns WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CampaignError(f"no campaign named {name!r}")
            if row[1] != state.value and row[1] not in allowed:
                raise CampaignError(f"campaign {name!r} is {row[1]}; it cannot become {state.value}")
            db.execute("UPDATE campaigns SET state = ?, updated_at = ? WHERE name = ?", (state.value, now, name))
            return _campaign((row[0], state.value, row[2], row[3]))
        return await self._tx("changing a campaign's state", fn)

    # ------------------------------------------------------------------ contacts
    async def add_contacts(self, name: str, contacts: list[Contact], *, max_contacts: int) -> tuple[int, int]:
        """Add contacts (pending, due at once); (added, already there). The whole import is
        refused when the campaign would hold more than ``max_contacts``."""
        def fn(db: sqlite3.Connection) -> tuple[int, int]:
            if not db.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
                raise CampaignError(f"no campaign named {name!r}")
            held = db.execute("SELECT COUNT(*) FROM contacts WHERE campaign = ?", (name,)).fetchone()[0]
            if held + len(contacts) > max_contacts:
                raise CampaignError(f"campaign {name!r} would hold {held + len(contacts)} contacts; the most is "
                                    f"{max_contacts} (campaigns.max_contacts)")
            added = 0
            for c in contacts:
                cur = db.execute(f"INSERT OR IGNORE INTO contacts ({_CONTACT_COLUMNS}) VALUES "
                                 "(?, ?, ?, ?, ?, ?, ?, ?, 0, 0, '', 0, '')",
                                 (name, c.ref, c.phone, c.customer_id, c.name, c.tz, c.text,
                                  ContactStatus.PENDING.value))
                added += cur.rowcount
            if added:
                db.execute("UPDATE campaigns SET state = ? WHERE name = ? AND state = ?",
                           (CampaignState.RUNNING.value, name, CampaignState.DONE.value))
            return added, len(contacts) - added
        return await self._tx("importing contacts", fn)

    async def contact(self, name: str, ref: str) -> Contact | None:
        row = await self._tx("reading a contact", lambda db: db.execute(
            f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE campaign = ? AND ref = ?", (name, ref)).fetchone())
        return _contact(row) if row else None

    async def due(self, name: str, now: float, limit: int) -> list[Contact]:
        """Pending contacts whose next attempt is due, the longest waiting first."""
        rows = await self._tx("reading due contacts", lambda db: db.execute(
            f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE campaign = ? AND status = ? AND next_at <= ?"
            " ORDER BY next_at, rowid LIMIT ?", (name, ContactStatus.PENDING.value, now, limit)).fetchall())
        return [_contact(r) for r in rows]

    async def defer(self, name: str, ref: str, next_at: float) -> None:
        """Not before ``next_at`` (quiet hours): no attempt is used."""
        await self._tx("deferring a contact", lambda db: db.execute(
            "UPDATE contacts SET next_at = ? WHERE campaign = ? AND ref = ? AND status = ?",
            (next_at, name, ref, ContactStatus.PENDING.value)))

    async def close_contact(self, name: str, ref: str, status: ContactStatus, outcome: Outcome) -> None:
        """A final status reached without an attempt (on the do-not-call list when due)."""
        await self._tx("closing a contact", lambda db: db.execute(
            "UPDATE contacts SET status = ?, last_outcome = ? WHERE campaign = ? AND ref = ? AND status = ?",
            (status.value, outcome.value, name, ref, ContactStatus.PENDING.value)))

    # ------------------------------------------------------------------ attempts
    async def claim(self, contact: Contact, kind: str, now: float, node: str, *, rate: int,
                    concurrency: int) -> Attempt | None:
        """Take ``contact`` for its next attempt, or None: the campaign is not running, the
        contact moved on, or the pace (``rate`` attempts in the last 60 s) or the concurrency
        (``concurrency`` calls open) leaves no room. One transaction: atomic for every process."""
        name, n = contact.campaign, contact.attempts + 1

        def fn(db: sqlite3.Connection) -> Attempt | None:
            state = db.execute("SELECT state FROM campaigns WHERE name = ?", (name,)).fetchone()
            if state is None or state[0] != CampaignState.RUNNING.value:
                return None
            if db.execute("SELECT COUNT(*) FROM attempts WHERE campaign = ? AND started_at > ?",
                          (name, now - 60.0)).fetchone()[0] >= rate:
                return None
            if kind == "call" and db.execute(
                    "SELECT COUNT(*) FROM attempts WHERE campaign = ? AND kind = 'call' AND state IN (?, ?)",
                    (name, *OPEN_STATES)).fetchone()[0] >= concurrency:
                return None
            cur = db.execute("UPDATE contacts SET status = ?, attempts = ? WHERE campaign = ? AND ref = ?"
                             " AND status = ? AND attempts = ?",
                             (ContactStatus.ACTIVE.value, n, name, contact.ref, ContactStatus.PENDING.value,
                              contact.attempts))
            if cur.rowcount != 1:
                return None
            attempt = Attempt(name, contact.ref, n, kind, AttemptState.CLAIMED, conversation_id=contact.conversation_id,
                              started_at=now, node=node)
            db.execute(f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, '', ?, -1, ?, 0, 0, ?, '')",
                       (name, contact.ref, n, kind, AttemptState.CLAIMED.value, contact.conversation_id, now, node))
            return attempt
        return await self._tx("claiming a contact", fn)

    async def pace(self, name: str, now: float) -> tuple[int, int]:
        """(attempts started in the last 60 s, calls open): what :meth:`claim` will check."""
        def fn(db: sqlite3.Connection) -> tuple[int, int]:
            started = db.execute("SELECT COUNT(*) FROM attempts WHERE campaign = ? AND started_at > ?",
                                 (name, now - 60.0)).fetchone()[0]
            calls = db.execute("SELECT COUNT(*) FROM attempts WHERE campaign = ? AND kind = 'call' AND state IN (?, ?)",
                               (name, *OPEN_STATES)).fetchone()[0]
            return int(started), int(calls)
        return await self._tx("reading a campaign's pace", fn)

    async def attach(self, attempt: Attempt, conversation_id: str, baseline: int) -> Attempt:
        """The attempt's conversation and where its log stood before the attempt acted."""
        def fn(db: sqlite3.Connection) -> None:
            db.execute("UPDATE attempts SET conversation_id = ?, baseline = ? WHERE campaign = ? AND ref = ? AND n = ?",
                       (conversation_id, baseline, attempt.campaign, attempt.ref, attempt.n))
            db.execute("UPDATE contacts SET conversation_id = ? WHERE campaign = ? AND ref = ?",
                       (conversation_id, attempt.campaign, attempt.ref))
        await self._tx("recording an attempt's conversation", fn)
        return replace(attempt, conversation_id=conversation_id, baseline=baseline)

    async def placed(self, attempt: Attempt, now: float) -> None:
        """The SMS was sent or the call placed: the outcome is awaited."""
        outcome = Outcome.SMS_SENT if attempt.kind == "sms" else Outcome.CALLING

        def fn(db: sqlite3.Connection) -> None:
            db.execute("UPDATE attempts SET state = ?, outcome = ?, placed_at = ? WHERE campaign = ? AND ref = ? "
                       "AND n = ? AND state = ?", (AttemptState.PLACED.value, outcome.value, now, attempt.campaign,
                                                   attempt.ref, attempt.n, AttemptState.CLAIMED.value))
            db.execute("UPDATE contacts SET last_outcome = ?, sms_sent = sms_sent OR ? WHERE campaign = ? AND ref = ?",
                       (outcome.value, attempt.kind == "sms", attempt.campaign, attempt.ref))
        await self._tx("recording a placed attempt", fn)

    async def finish(self, attempt: Attempt, outcome: Outcome, status: ContactStatus, next_at: float, now: float,
                     detail: str = "") -> None:
        """The attempt's final outcome, and the contact's new status (and next attempt time)."""
        def fn(db: sqlite3.Connection) -> None:
            db.execute("UPDATE attempts SET state = ?, outcome = ?, ended_at = ?, detail = ? WHERE campaign = ? "
                       "AND ref = ? AND n = ?", (AttemptState.DONE.value, outcome.value, now, detail[:200],
                                                 attempt.campaign, attempt.ref, attempt.n))
            db.execute("UPDATE contacts SET status = ?, next_at = ?, last_outcome = ? WHERE campaign = ? AND ref = ?"
                       " AND attempts = ?", (status.value, next_at, outcome.value, attempt.campaign, attempt.ref,
                                             attempt.n))
        await self._tx("recording an outcome", fn)

    async def open_attempts(self, name: str, *, state: AttemptState | None = None) -> list[Attempt]:
        states = (state.value,) if state is not None else OPEN_STATES
        marks = ", ".join("?" for _ in states)
        rows = await self._tx("reading open attempts", lambda db: db.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE campaign = ? AND state IN ({marks}) ORDER BY started_at",
            (name, *states)).fetchall())
        return [_attempt(r) for r in rows]

    async def attempts(self, name: str, *, ref: str = "", limit: int = 100) -> list[Attempt]:
        count = max(1, min(int(limit), MAX_LISTED))
        query = f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE campaign = ?"
        args: tuple[Any, ...] = (name,)
        if ref:
            query, args = query + " AND ref = ?", args + (ref,)
        rows = await self._tx("listing attempts", lambda db: db.execute(
            query + " ORDER BY started_at DESC, n DESC LIMIT ?", args + (count,)).fetchall())
        return [_attempt(r) for r in rows]

    async def summary(self, name: str, now: float) -> dict[str, Any]:
        """Counts for the status page: contacts by status, attempts by outcome, calls open, pace."""
        def fn(db: sqlite3.Connection) -> dict[str, Any]:
            contacts = dict(db.execute("SELECT status, COUNT(*) FROM contacts WHERE campaign = ? GROUP BY status",
                                       (name,)).fetchall())
            outcomes = dict(db.execute("SELECT outcome, COUNT(*) FROM attempts WHERE campaign = ? AND outcome != ''"
                                       " GROUP BY outcome", (name,)).fetchall())
            calls = db.execute("SELECT COUNT(*) FROM attempts WHERE campaign = ? AND kind = 'call' AND state IN (?, ?)",
                               (name, *OPEN_STATES)).fetchone()[0]
            minute = db.execute("SELECT COUNT(*) FROM attempts WHERE campaign = ? AND started_at > ?",
                                (name, now - 60.0)).fetchone()[0]
            return {"contacts": contacts, "outcomes": outcomes, "calls_in_progress": calls,
                    "attempts_last_minute": minute, "total": sum(contacts.values())}
        return await self._tx("summarising a campaign", fn)

    async def unfinished(self, name: str) -> int:
        """Contacts without a final status (pending or active)."""
        return int(await self._tx("counting contacts", lambda db: db.execute(
            "SELECT COUNT(*) FROM contacts WHERE campaign = ? AND status IN (?, ?)",
            (name, ContactStatus.PENDING.value, ContactStatus.ACTIVE.value)).fetchone()[0]))

    # ------------------------------------------------------------------ the runner lease (one node)
    async def hold_lease(self, node: str, now: float, seconds: float) -> tuple[bool, str]:
        """Take or renew the runner lease for ``node``: (held, the node that held it before)."""
        def fn(db: sqlite3.Connection) -> tuple[bool, str]:
            row = db.execute("SELECT node, until FROM lease WHERE name = 'runner'").fetchone()
            if row is not None and row[0] != node and float(row[1]) > now:
                return False, str(row[0])
            db.execute("INSERT INTO lease (name, node, until) VALUES ('runner', ?, ?) ON CONFLICT (name) DO UPDATE"
                       " SET node = excluded.node, until = excluded.until", (node, now + seconds))
            return True, str(row[0]) if row is not None else ""
        return await self._tx("taking the runner lease", fn)

    async def release_lease(self, node: str) -> None:
        await self._tx("releasing the runner lease", lambda db: db.execute(
            "DELETE FROM lease WHERE name = 'runner' AND node = ?", (node,)))
