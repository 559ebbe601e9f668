"""The human side of one conversation as the core keeps it: waiting for an agent, held by one,
closed by one.

One typed value, :class:`Handoff`, kept in the dialog state (``record.state.handoff``,
:mod:`gateway.core.dialog_state`) and stored with it as plain JSON, so every node reads the same. The queue itself (who waits where, offered to whom) lives beside the
context store (:mod:`gateway.agents.queue`); this value is what the *dialog* needs to know:

- ``waiting``: a digital conversation was transferred and waits in the gateway's queue; the bot
  stays quiet meanwhile (what the customer types is kept for the agent);
- ``agent``: the agent holding it now; the customer's messages go to them, not to the bot;
- ``closings``: every disposition (code, notes, agent, time): the next agent sees them;
- ``message_ids``: the last message ids seen from either side, so a message sent again after a
  reconnect is kept once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.context.store import ConversationRecord

MAX_MESSAGE_IDS = 64
"""Message ids remembered per conversation: more than a desktop or a chat page ever resends
after one reconnect (they resend what was not acknowledged, a few at most)."""
MAX_CLOSINGS = 20
"""Dispositions kept per conversation (a conversation reopened twenty times is a case for the CRM)."""
MAX_NOTES_CHARS = 2000
"""Longest disposition note kept (a wrap-up note, not a document)."""
MAX_ID_CHARS = 64


@dataclass(frozen=True)
class Closing:
    """One disposition: how an agent closed the conversation."""

    code: str
    notes: str
    agent: str
    at: float


@dataclass(frozen=True)
class Handoff:
    """Where the conversation stands with the people around the bot."""

    waiting: bool = False
    agent: str = ""
    agent_name: str = ""
    since: float = 0.0
    """When the wait started, or when the agent took it."""
    channel: str = ""
    """The customer's channel when it was handed over (where agent messages go)."""
    choice: str = ""
    """``message`` or ``callback`` when the waiting customer chose not to wait on line."""
    closings: tuple[Closing, ...] = ()
    message_ids: tuple[str, ...] = field(default=())

    @property
    def engaged(self) -> bool:
        """The people have it: waiting for an agent, or held by one (the bot stays quiet)."""
        return self.waiting or bool(self.agent)

    @classmethod
    def of(cls, record: ConversationRecord) -> "Handoff":
        return record.state.handoff

    def save(self, record: ConversationRecord) -> None:
        record.state.handoff = self

    def as_json(self) -> dict[str, Any]:
        """The stored form (one JSON object, as every version has kept it)."""
        data = asdict(self)
        data["closings"] = [asdict(c) for c in self.closings]
        data["message_ids"] = list(self.message_ids)
        return data

    @classmethod
    def from_json(cls, raw: Any) -> "Handoff":
        closings = tuple(Closing(str(c.get("code", "")), str(c.get("notes", "")), str(c.get("agent", "")),
                                 float(c.get("at", 0.0)))
                         for c in raw.get("closings", ()) if isinstance(c, dict))
        return cls(waiting=bool(raw.get("waiting")), agent=str(raw.get("agent", "")),
                   agent_name=str(raw.get("agent_name", "")), since=float(raw.get("since", 0.0)),
                   channel=str(raw.get("channel", "")), choice=str(raw.get("choice", "")), closings=closings,
                   message_ids=tuple(str(i) for i in raw.get("message_ids", ())))

    # -- transitions (each returns the new value) ------------------------------------------
    def wait(self, channel: str, now: float) -> "Handoff":
        return replace(self, waiting=True, agent="", agent_name="", since=now, channel=channel, choice="")

    def taken(self, agent: str, name: str, now: float, channel: str = "") -> "Handoff":
        return replace(self, waiting=False, agent=agent, agent_name=name or agent, since=now,
                       channel=channel or self.channel, choice="")

    def chose(self, choice: str) -> "Handoff":
        """The waiting customer chose to leave a ``message`` or be called back (``callback``)."""
        return replace(self, choice=choice)

    def released(self) -> "Handoff":
        """Back to the bot (or closed): nobody holds it, nobody waits."""
        return replace(self, waiting=False, agent="", agent_name="", choice="")

    def closed(self, code: str, notes: str, agent: str, now: float) -> "Handoff":
        closing = Closing(code, notes[:MAX_NOTES_CHARS], agent, now)
        return replace(self.released(), closings=(self.closings + (closing,))[-MAX_CLOSINGS:])

    def seen(self, message_id: str) -> bool:
        return bool(message_id) and message_id in self.message_ids

    def remember(self, message_id: str) -> "Handoff":
        if not message_id:
            return self
        return replace(self, message_ids=(self.message_ids + (message_id[:MAX_ID_CHARS],))[-MAX_MESSAGE_IDS:])

    def as_context(self) -> dict[str, Any]:
        """What the screen-pop and the supervisor view show of it."""
        return {"waiting": self.waiting, "agent": self.agent, "agent_name": self.agent_name, "since": self.since,
                "choice": self.choice, "closings": [asdict(c) for c in self.closings]}
