"""The queue of conversations waiting for a person: its entries and the rules that change them.

Sans-IO: :class:`QueueEntry` is a frozen value and every change is a pure function of an entry,
the time and the agent asking (an :data:`Transition`), applied atomically by a store
(:mod:`gateway.agents.queue_store`, SQLite or Redis) so every node sees one queue.

An entry is **waiting** (nobody has it), **offered** (to one agent until ``offer_until``: no
other agent is offered it meanwhile), or **taken** (by ``taken_by``, held while the node of that
agent's desktop renews ``lease_until``; a lapsed lease puts it back to waiting, at its old place).
A voice entry waits in the PBX's queue: the gateway never offers it; AMI says who it rings
(``ringing``) and who answered (a claim).

The rules, each a transition below:

- an offer goes only to an agent who has not let this entry's offer lapse before (``declined``);
  when every candidate has, the list starts over;
- a claim succeeds unless someone else holds the entry; the refusal names who and since when,
  which the desktop shows as it is ("bob took this conversation 3 s ago");
- ``since`` never changes while the entry lives: a conversation put back after a dropped
  desktop is first in line again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

MAX_DECLINED = 32
"""Agents remembered as having let an entry's offer lapse (more than any team serving one queue)."""
MAX_TEXT_CHARS = 200
"""Longest reason, intent or customer label kept in an entry (it is a list row, not the context)."""


@dataclass(frozen=True)
class QueueEntry:
    """One conversation waiting for (or held by) a person."""

    conversation_id: str
    queue: str
    since: float
    skills: tuple[str, ...] = ()
    language: str = "en"
    channel: str = "chat"
    reason: str = ""
    intent: str = ""
    customer: str = ""
    mode: str = ""
    """``message`` or ``callback``: the customer chose not to wait on line."""
    offered_to: str = ""
    offer_until: float = 0.0
    declined: tuple[str, ...] = ()
    taken_by: str = ""
    taken_at: float = 0.0
    lease_until: float = 0.0
    ringing: str = ""
    """Voice: the agent whose phone the PBX rings now (AMI AgentCalled)."""

    @property
    def voice(self) -> bool:
        return self.channel in ("voice", "sip", "phone")

    @property
    def taken(self) -> bool:
        return bool(self.taken_by)

    def offered(self, now: float) -> bool:
        return bool(self.offered_to) and self.offer_until > now

    def state(self, now: float) -> str:
        """``taken``, ``offered``, ``ringing`` or ``waiting``."""
        if self.taken:
            return "taken"
        if self.offered(now):
            return "offered"
        return "ringing" if self.ringing else "waiting"

    def as_json(self, now: float) -> dict[str, Any]:
        """The entry as desktops and the supervisor page show it."""
        return {"conversation_id": self.conversation_id, "queue": self.queue, "skills": list(self.skills),
                "language": self.language, "channel": self.channel, "reason": self.reason, "intent": self.intent,
                "customer": self.customer, "mode": self.mode, "state": self.state(now),
                "waiting_seconds": round(max(0.0, now - self.since), 1), "taken_by": self.taken_by,
                "offered_to": self.offered_to if self.offered(now) else "", "ringing": self.ringing}

    def dumps(self) -> str:
        data = asdict(self)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def loads(cls, text: str) -> "QueueEntry":
        data = json.loads(text)
        data["skills"] = tuple(data.get("skills", ()))
        data["declined"] = tuple(data.get("declined", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def clip(text: str) -> str:
    return " ".join(str(text).split())[:MAX_TEXT_CHARS]


@dataclass(frozen=True)
class Outcome:
    """What a transition did: ``ok``, and when it did not, the entry as it stands (who holds it)."""

    ok: bool
    entry: QueueEntry | None = None
    why: str = ""


Transition = Callable[[QueueEntry | None], tuple[QueueEntry | None, Outcome]]
"""A change of one entry: the new entry (None removes it) and the outcome; the store applies it
atomically and writes nothing when the entry comes back unchanged."""


def enqueue(new: QueueEntry) -> Transition:
    """Put a conversation in the queue; one already there keeps its place (``since``) and whoever holds it."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None:
            return new, Outcome(True, new)
        merged = replace(new, since=entry.since, taken_by=entry.taken_by, taken_at=entry.taken_at,
                         lease_until=entry.lease_until, offered_to=entry.offered_to, offer_until=entry.offer_until,
                         declined=entry.declined, mode=entry.mode or new.mode)
        return merged, Outcome(True, merged)
    return apply


def offer(agent: str, now: float, until: float) -> Transition:
    """Offer the entry to ``agent`` until ``until`` when nobody holds it, no live offer stands and
    ``agent`` has not let it lapse before."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None:
            return None, Outcome(False, None, "gone")
        if entry.taken or entry.voice:
            return entry, Outcome(False, entry, "taken" if entry.taken else "voice")
        if entry.offered(now):  # to another agent, or already to this one (by another node)
            return entry, Outcome(False, entry, "offered")
        if agent in entry.declined:
            return entry, Outcome(False, entry, "declined")
        changed = replace(entry, offered_to=agent, offer_until=until)
        return changed, Outcome(True, changed)
    return apply


def lapse(agent: str, now: float) -> Transition:
    """``agent`` let the offer lapse (or declined it): the next agent may be offered it."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None or entry.offered_to != agent or entry.taken:
            return entry, Outcome(False, entry)
        declined = (entry.declined + (agent,))[-MAX_DECLINED:]
        changed = replace(entry, offered_to="", offer_until=0.0, declined=declined)
        return changed, Outcome(True, changed)
    return apply


def forgive() -> Transition:
    """Every candidate let it lapse: start over."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None or not entry.declined:
            return entry, Outcome(False, entry)
        changed = replace(entry, declined=())
        return changed, Outcome(True, changed)
    return apply


def claim(agent: str, now: float, lease_until: float) -> Transition:
    """``agent`` takes the entry, unless someone else holds it (the outcome then says who)."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None:
            return None, Outcome(False, None, "gone")
        if entry.taken and entry.taken_by != agent:
            return entry, Outcome(False, entry, "taken")
        changed = replace(entry, taken_by=agent, taken_at=entry.taken_at if entry.taken_by == agent else now,
                          lease_until=lease_until, offered_to="", offer_until=0.0, ringing="")
        return changed, Outcome(True, changed)
    return apply


def renew(agent: str, lease_until: float) -> Transition:
    """The node of ``agent``'s desktop says they are still there."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None or entry.taken_by != agent:
            return entry, Outcome(False, entry)
        changed = replace(entry, lease_until=lease_until)
        return changed, Outcome(True, changed)
    return apply


def release_lapsed(now: float) -> Transition:
    """A holder whose lease lapsed (their desktop went away past the grace): back to waiting,
    at the old place."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None or not entry.taken or entry.lease_until > now:
            return entry, Outcome(False, entry)
        changed = replace(entry, taken_by="", taken_at=0.0, lease_until=0.0, declined=(entry.taken_by,))
        return changed, Outcome(True, entry)  # the outcome names the one who dropped
    return apply


def ring(agent: str) -> Transition:
    """Voice: the PBX rings ``agent`` for this entry (AMI AgentCalled)."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None or entry.taken:
            return entry, Outcome(False, entry)
        changed = replace(entry, ringing=agent)
        return changed, Outcome(True, changed)
    return apply


def choose_mode(mode: str) -> Transition:
    """The waiting customer chose to leave a ``message`` or be called back."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None or entry.mode == mode:
            return entry, Outcome(False, entry)
        changed = replace(entry, mode=mode)
        return changed, Outcome(True, changed)
    return apply


def remove(holder: str = "") -> Transition:
    """Take the entry out of the queue (handed back, closed); with ``holder``, only theirs."""
    def apply(entry: QueueEntry | None) -> tuple[QueueEntry | None, Outcome]:
        if entry is None:
            return None, Outcome(False, None, "gone")
        if holder and entry.taken_by and entry.taken_by != holder:
            return entry, Outcome(False, entry, "taken")
        return None, Outcome(True, entry)
    return apply


@dataclass(frozen=True)
class Waits:
    """Recent waits of one queue (seconds from joining to an agent taking it), newest first."""

    seconds: tuple[float, ...] = field(default=())

    def typical(self) -> float | None:
        """The median of the recent waits, or None before any."""
        if not self.seconds:
            return None
        ordered = sorted(self.seconds)
        return ordered[len(ordered) // 2]
