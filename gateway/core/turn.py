"""One turn of the dialog engine: the conversation, the party who spoke, and what comes out.

The orchestrator makes a :class:`Turn` for each event (and for opening a conversation on a
channel), the engine fills ``out`` with the actions for the channel and ``notes`` with events
the core writes to the conversation's log beside them (a verification lock, a refused call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.context.store import ConversationRecord, LoggedEvent
from gateway.core.actions import Action
from gateway.core.channels import Channel
from gateway.core.trust import Ledger, Party


@dataclass(frozen=True)
class Note:
    """An event the core itself logs (``kind``, ``payload``): audit facts, not customer input."""

    kind: str
    payload: dict[str, Any]


@dataclass
class Turn:
    record: ConversationRecord
    channel: Channel
    party: Party
    now: float
    out: list[Action] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    keyed: str = ""
    """Digits keyed so far into a sensitive step by this session: held by the orchestrator in
    memory, never in the record (a half-entered PIN is a secret too)."""
    text: str = ""
    """What the customer said or typed in this turn, raw: for a Rasa action's ``latest_message``;
    never stored (the log keeps it redacted)."""
    can_place_calls: bool = True
    """Whether a telephony channel carries out ``Originate`` here (the orchestrator knows its sinks)."""
    logged: list[LoggedEvent] = field(default_factory=list)
    """What this turn wrote to the conversation's log (the event, the notes, the actions), in
    order: what the orchestrator's observers (live transcripts) receive."""

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.record)

    def note(self, kind: str, **payload: Any) -> None:
        self.notes.append(Note(kind, payload))
