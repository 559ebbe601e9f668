"""What a node knows of its own conversations, so they go on while Redis is away.

Every record a node reads or writes through the shared store is kept here (a copy), with the
last seq of its event log and the newest events the node saw. During an outage
(:mod:`gateway.context.outage`) the node answers its conversations from this copy: a call or a
chat in progress keeps its journey, its proofs and its transcript. Conversations of other nodes
are not here; a node does not pretend to know them.

Bounded: at most ``conversations`` records (least recently used go first, never one whose writes
still wait in the spool) and :data:`TAIL_EVENTS` events each.
"""

from __future__ import annotations

import copy
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from gateway.context.store import ConversationRecord, LoggedEvent

TAIL_EVENTS = 200
"""Events kept per conversation: the transcript of a screen-pop during an outage (the core
shows 500 at most; a call's own turns are far fewer)."""


@dataclass
class _Entry:
    record: ConversationRecord
    seq: int
    tail: deque[LoggedEvent] = field(default_factory=lambda: deque(maxlen=TAIL_EVENTS))
    waiting: int = 0
    """Writes of this conversation in the spool (the entry is kept while any wait)."""


class NodeCache:
    """The node's conversations, most recently used last."""

    def __init__(self, conversations: int) -> None:
        self.capacity = conversations
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._entries

    def _touch(self, conversation_id: str) -> _Entry | None:
        entry = self._entries.get(conversation_id)
        if entry is not None:
            self._entries.move_to_end(conversation_id)
        return entry

    def put(self, record: ConversationRecord, seq: int | None = None) -> None:
        """Keep a copy of ``record`` (``seq``: the last seq of its log, when known)."""
        entry = self._touch(record.id)
        if entry is None:
            self._entries[record.id] = _Entry(copy.deepcopy(record), seq if seq is not None else 0)
            self._evict()
            return
        entry.record = copy.deepcopy(record)
        if seq is not None:
            entry.seq = max(entry.seq, seq)

    def _evict(self) -> None:
        if len(self._entries) <= self.capacity:
            return
        for cid in [cid for cid, e in self._entries.items() if not e.waiting][: len(self._entries) - self.capacity]:
            del self._entries[cid]

    def record(self, conversation_id: str) -> ConversationRecord | None:
        """A copy of the node's record (the caller may change it)."""
        entry = self._touch(conversation_id)
        return copy.deepcopy(entry.record) if entry is not None else None

    def version(self, conversation_id: str) -> int | None:
        entry = self._entries.get(conversation_id)
        return entry.record.version if entry is not None else None

    def next_seq(self, conversation_id: str) -> int:
        entry = self._entries[conversation_id]
        return entry.seq + 1

    def logged(self, event: LoggedEvent) -> None:
        """An event of a kept conversation was appended (in Redis or in the spool)."""
        entry = self._entries.get(event.conversation_id)
        if entry is not None:
            entry.seq = max(entry.seq, event.seq)
            entry.tail.append(event)

    def set_tail(self, conversation_id: str, events: list[LoggedEvent]) -> None:
        """The log as read from Redis (its newest events replace what the node had)."""
        entry = self._entries.get(conversation_id)
        if entry is not None and events:
            entry.tail = deque(events[-TAIL_EVENTS:], maxlen=TAIL_EVENTS)
            entry.seq = max(entry.seq, events[-1].seq)

    def tail(self, conversation_id: str, limit: int | None = None) -> list[LoggedEvent]:
        entry = self._touch(conversation_id)
        if entry is None or (limit is not None and limit <= 0):
            return []
        events = list(entry.tail)
        return events if limit is None else events[-limit:]

    def waiting(self, conversation_id: str, change: int) -> None:
        """``change`` more (or fewer) of this conversation's writes wait in the spool."""
        entry = self._entries.get(conversation_id)
        if entry is not None:
            entry.waiting = max(0, entry.waiting + change)

    def find_recent(self, *, customer_id: str, caller_id: str, since: float) -> ConversationRecord | None:
        """Like the store's ``find_recent``, over the kept conversations only."""
        for kind, value in (("customer", customer_id), ("caller", caller_id)):
            if not value:
                continue
            found = [e.record for e in self._entries.values()
                     if (e.record.customer_id if kind == "customer" else e.record.caller_id) == value
                     and e.record.status != "closed" and e.record.updated_at >= since]
            if found:
                return copy.deepcopy(max(found, key=lambda r: r.updated_at))
        return None

    def recent(self, limit: int) -> list[ConversationRecord]:
        records = sorted((e.record for e in self._entries.values()), key=lambda r: r.updated_at, reverse=True)
        return [copy.deepcopy(r) for r in records[:max(0, limit)]]
