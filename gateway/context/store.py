"""The context store: where a conversation lives between turns, channels and restarts.

A :class:`ConversationRecord` is the conversation's current state (who the customer is, what
has been verified, where the journey stands, its slots). Beside it, an append-only event log
keeps everything said and done on every channel, redacted before it is written. Two backends
implement :class:`ContextStore`: SQLite (embedded default) and Redis (several gateway nodes).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from gateway.core.dialog_state import DialogState

if TYPE_CHECKING:
    from gateway.context.redaction import Redactor

STATUSES = ("active", "transferred", "closed")
"""Conversation statuses; ``closed`` conversations are never resumed."""


class StoreError(RuntimeError):
    """The store cannot do what was asked: a corrupt file, a lock held past the busy
    timeout, an unreachable Redis, an unknown conversation. The message says which and
    what to do."""


class StoreUnavailable(StoreError):
    """The shared store cannot be reached (refused, reset, timed out, still loading): what was
    asked may or may not have been applied. A node buffers writes through such an outage
    (:mod:`gateway.context.outage`); other callers treat it like any :class:`StoreError`."""


class ConcurrentUpdate(StoreError):
    """``save()`` was given a record older than the stored one (someone saved in between)."""


@dataclass
class ConversationRecord:
    """One conversation's current state. Mutable: the engine edits it and calls ``save()``."""

    id: str
    created_at: float
    updated_at: float
    customer_id: str = ""
    caller_id: str = ""
    channels: list[str] = field(default_factory=list)
    journey: str = ""
    step: str = ""
    slots: dict[str, Any] = field(default_factory=dict)
    verified: dict[str, float] = field(default_factory=dict)
    """Facts some session of this conversation proved, and when (history for reports); what
    the party on a channel may do is decided by ``trust`` (per-session grants), never by this."""
    status: str = "active"
    state: DialogState = field(default_factory=DialogState)
    """The dialog's working state (journey stack, retries, transfer, handoff...), typed; stored
    as one JSON object that records of every version read back (:mod:`gateway.core.dialog_state`)."""
    trust: dict[str, Any] = field(default_factory=dict)
    version: int = 0

    def add_channel(self, channel: str) -> None:
        """Remember that the conversation surfaced on ``channel`` (kept in order of first use)."""
        if channel and channel not in self.channels:
            self.channels.append(channel)


@dataclass(frozen=True)
class LoggedEvent:
    """One entry of a conversation's event log. ``seq`` counts from 1 per conversation."""

    seq: int
    conversation_id: str
    at: float
    channel: str
    kind: str
    payload: dict[str, Any]


class ContextStore(Protocol):
    """What the conversation core needs from a store. All methods are coroutines."""

    async def create(
        self, *, caller_id: str = "", customer_id: str = "", channel: str = ""
    ) -> ConversationRecord:
        """A new active conversation (version 0 once stored)."""
        ...

    async def get(self, conversation_id: str) -> ConversationRecord | None:
        """The stored conversation, or None."""
        ...

    async def save(self, record: ConversationRecord) -> None:
        """Store ``record``; bumps its ``version`` and ``updated_at`` in place.
        Raises :class:`ConcurrentUpdate` when the stored version is not ``record.version``."""
        ...

    async def find_recent(
        self, *, customer_id: str = "", caller_id: str = "", within_seconds: float
    ) -> ConversationRecord | None:
        """The most recently updated conversation of that customer (else of that caller id)
        that is not closed (transferred ones count) and was updated within the window."""
        ...

    async def append(
        self,
        conversation_id: str,
        *,
        channel: str,
        kind: str,
        payload: dict[str, Any],
        sensitive: Iterable[str] = (),
    ) -> LoggedEvent:
        """Append one event to the log; ``payload`` is redacted before it is written."""
        ...

    async def events(self, conversation_id: str, *, limit: int | None = None) -> list[LoggedEvent]:
        """The log, oldest first; with ``limit``, only the latest ``limit`` events."""
        ...

    async def recent(self, limit: int = 50) -> list[ConversationRecord]:
        """The most recently updated conversations, newest first (for dashboards)."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


def new_id() -> str:
    """A fresh conversation id (uuid4, hex)."""
    return uuid.uuid4().hex


def new_record(
    *, caller_id: str = "", customer_id: str = "", channel: str = "", now: float | None = None
) -> ConversationRecord:
    """A record for a conversation that is about to be stored for the first time."""
    at = time.time() if now is None else now
    record = ConversationRecord(
        id=new_id(), created_at=at, updated_at=at, customer_id=customer_id, caller_id=caller_id
    )
    record.add_channel(channel)
    return record


def _json_default(value: Any) -> Any:
    # Values a journey commonly puts in slots; they come back as strings (ISO dates, decimals).
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def dumps(value: Any, what: str) -> str:
    """JSON text for the store; a value that cannot be stored raises :class:`StoreError`."""
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {what}: {exc}") from exc


def record_as_dict(record: ConversationRecord) -> dict[str, Any]:
    """The record as the stores keep it (the dialog state in its stored form), a fresh copy."""
    data = asdict(record)
    data["state"] = record.state.to_dict()
    return data


def record_to_json(record: ConversationRecord, redactor: "Redactor | None" = None) -> str:
    """The whole record as JSON text. With ``redactor``, free text in ``slots`` and ``state``
    (a last utterance kept by the engine, say) is redacted first: card numbers, national ids
    and PINs are never persisted, in the record any more than in the event log."""
    data = record_as_dict(record)
    if redactor is not None:
        data["slots"] = redactor.redact_payload(data["slots"])
        data["state"] = redactor.redact_payload(data["state"])
    return dumps(data, f"conversation {record.id}")


def record_from_dict(data: dict[str, Any]) -> ConversationRecord:
    """Rebuild a record from its stored form (unknown keys are ignored)."""
    return ConversationRecord(
        id=str(data["id"]),
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        customer_id=str(data.get("customer_id", "")),
        caller_id=str(data.get("caller_id", "")),
        channels=list(data.get("channels", [])),
        journey=str(data.get("journey", "")),
        step=str(data.get("step", "")),
        slots=dict(data.get("slots", {})),
        verified={str(k): float(v) for k, v in dict(data.get("verified", {})).items()},
        status=str(data.get("status", "active")),
        state=DialogState.from_dict(data.get("state"), where=f"conversation {data['id']}"),
        trust=dict(data.get("trust", {})),
        version=int(data.get("version", 0)),
    )


def check_record(record: ConversationRecord) -> None:
    """Refuse a record the store must not write (a status outside :data:`STATUSES`)."""
    if record.status not in STATUSES:
        raise StoreError(
            f"conversation {record.id}: status {record.status!r} is not one of {', '.join(STATUSES)}"
        )


def load_record(text: str, where: str) -> ConversationRecord:
    """Parse a stored record; unreadable text raises :class:`StoreError` naming ``where``."""
    try:
        return record_from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{where} holds an unreadable record: {exc}") from exc


def saved_copy(record: ConversationRecord, now: float) -> ConversationRecord:
    """What ``save()`` writes: ``record`` checked, one version on, ``updated_at`` never going back."""
    check_record(record)
    return replace(record, version=record.version + 1, updated_at=max(now, record.updated_at))


def not_stored(conversation_id: str, *, event: bool = False) -> StoreError:
    """The error for saving (or, with ``event``, logging an event of) a conversation that was
    never created."""
    if event:
        return StoreError(f"cannot log an event: conversation {conversation_id} is not in the store")
    return StoreError(f"conversation {conversation_id} is not in the store; create() it first")


def concurrent_update(conversation_id: str, stored_version: int, expected: int) -> ConcurrentUpdate:
    """The error for saving a copy older than the stored record."""
    return ConcurrentUpdate(
        f"conversation {conversation_id} was saved by someone else (stored version {stored_version}, "
        f"this copy has {expected}); get() it again and reapply the change"
    )


def event_payload(
    redactor: "Redactor", conversation_id: str, payload: dict[str, Any], sensitive: Iterable[str] = ()
) -> tuple[dict[str, Any], str]:
    """An event payload as the log keeps it: redacted, and as read back from its JSON text
    (returned beside it), so ``append()`` answers what ``events()`` will read."""
    text = dumps(redactor.redact_payload(payload, sensitive), f"an event of conversation {conversation_id}")
    return json.loads(text), text
