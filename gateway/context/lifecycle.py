"""What the context store offers beyond one conversation: scans, the feed, retention and erasure.

The conversation core needs ``get``/``save``/``append``; analytics, QA, events out and data
governance need the store as a whole. Both backends implement :class:`LifecycleStore`:

- **scans**: conversations updated in a time range (analytics, QA), the ids of a customer's
  conversations (erasure, subject access);
- **the feed**: every event of every conversation in one global order, with a *position*
  (SQLite: a number from a table its trigger fills in the same transaction as the event;
  Redis: the id of the entry the append script adds to a Redis Stream), read by the webhook
  publisher and by anyone with a Redis consumer group;
- **retention and erasure**: the event log is append-only (SQLite triggers refuse UPDATE and
  DELETE). The one way around is a *purge*: in one transaction it registers itself in
  ``purge_guard`` (the triggers let writes through only while a guard row exists), does its
  work, removes the guard and keeps a row in ``purges`` (when, who, why, counts); the caller
  writes the same to the audit log. Nothing else can change the log. Redis has no triggers: the
  same operations run there as MULTI transactions, and the audit log holds the record.

What a transcript purge removes from an event's payload (:data:`PERSONAL_KEYS`): the words said
and written, phone numbers, form fields and keyed digits. What stays (kind, channel, time, step
ids, what was expected, confidence, queue, reason) is what analytics and QA read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol

from gateway.context.store import ConversationRecord, LoggedEvent

PERSONAL_KEYS = frozenset({"text", "caller_id", "dialed", "number", "to", "fields", "digit", "customer_ref",
                           "context"})
"""Payload keys that hold what a person said, typed or keyed, or where they can be reached."""

EXPIRED = "[expired]"
"""What a purged value becomes (the key stays, so the event's shape is kept)."""

MAX_SCAN = 100_000
"""Most conversations one scan returns: a report over more asks for a shorter range."""

MAX_FEED_BATCH = 1000
"""Most feed entries one read returns."""


def strip_personal(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` without what a person said or where they can be reached (values become
    :data:`EXPIRED`; everything else is kept)."""
    return {k: (EXPIRED if k in PERSONAL_KEYS and v not in ("", None, {}, []) else v) for k, v in payload.items()}


@dataclass(frozen=True)
class FeedEntry:
    """One event in the global order. ``position`` is opaque text: compare only by equality and
    pass it back to :meth:`LifecycleStore.feed` to read what follows."""

    position: str
    event: LoggedEvent


@dataclass(frozen=True)
class Cutoffs:
    """Epoch times before which each kind of data goes (0 = keep that kind for ever).

    ``conversations``: a conversation last updated before this goes whole (record, event log,
    feed entries). ``transcripts``: the personal values of its events are replaced by
    :data:`EXPIRED`. ``slots``: the record's slots and the engine's working state are cleared
    (status, journey, step, channels and times stay for reports)."""

    conversations: float = 0.0
    transcripts: float = 0.0
    slots: float = 0.0
    feed: float = 0.0
    """Feed entries older than this go (the events themselves stay in the log)."""


@dataclass
class PurgeCounts:
    """What a purge or an erasure did, by what it touched."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, n: int) -> None:
        if n:
            self.counts[what] = self.counts.get(what, 0) + int(n)

    def merge(self, other: "PurgeCounts", prefix: str = "") -> None:
        for key, value in other.counts.items():
            self.add(prefix + key, value)

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


class LifecycleStore(Protocol):
    """The store-wide operations both context backends implement."""

    async def conversations_between(self, since: float, until: float, *,
                                    limit: int = MAX_SCAN) -> list[ConversationRecord]:
        """Conversations last updated in ``[since, until]``, oldest update first."""
        ...

    async def conversation_ids(self, *, customer_id: str = "", caller_ids: Iterable[str] = ()) -> list[str]:
        """Every stored conversation of ``customer_id`` or of one of ``caller_ids`` (any age)."""
        ...

    async def feed(self, after: str = "", *, limit: int = 100) -> list[FeedEntry]:
        """Events after ``position`` (from the oldest kept when empty), in the global order."""
        ...

    async def feed_head(self) -> str:
        """The position of the newest feed entry ('' when the feed is empty)."""
        ...

    async def erase_conversations(self, ids: Iterable[str], *, actor: str, reason: str) -> PurgeCounts:
        """Remove these conversations whole: records, event logs, feed entries, index entries."""
        ...

    async def expire(self, cutoffs: Cutoffs, *, actor: str) -> PurgeCounts:
        """Apply retention: what :class:`Cutoffs` says is too old goes."""
        ...
