"""Actions: what the conversation core tells a channel to do.

The core answers each event with a list of actions. A channel carries out the ones it owns
(a voice channel speaks ``Say``; a chat channel prints it) and ignores nothing silently: an
action a channel cannot carry out is handed back to the orchestrator, which routes it to the
channel that can (an SMS follow-up requested during a call, a screen-pop on transfer).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping

ExpectKind = Literal["open", "digits", "yesno", "choice", "date", "amount", "none"]


@dataclass(frozen=True)
class Expect:
    """What the journey expects next, so the voice path can pick the recognizer for the turn.

    ``open``: free speech (accurate engine). ``digits``: a digit string of ``min_digits`` to
    ``max_digits`` (closed grammar, DTMF alongside). ``yesno``. ``choice``: one of ``options``.
    ``date`` and ``amount``: spoken values. ``none``: nothing (a statement).
    """

    kind: ExpectKind = "open"
    options: tuple[str, ...] = ()
    min_digits: int = 0
    max_digits: int = 0
    no_input_seconds: float = 6.0
    sensitive: bool = False

    @property
    def closed(self) -> bool:
        """True when the answer comes from a small closed set (fast recognizer)."""
        return self.kind in ("digits", "yesno", "choice")


@dataclass(frozen=True)
class Action:
    """Base of every action."""

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Say(Action):
    """Speak or print ``text``. ``barge_in``: the caller may interrupt it."""

    text: str
    barge_in: bool = True
    prompt_id: str = ""


@dataclass(frozen=True)
class Ask(Action):
    """Say ``text`` and wait for an answer of the kind ``expect`` describes."""

    text: str
    expect: Expect = field(default_factory=Expect)
    barge_in: bool = True
    prompt_id: str = ""


@dataclass(frozen=True)
class Transfer(Action):
    """Hand the conversation to a human agent chosen by queue, skills and language."""

    queue: str
    skills: tuple[str, ...] = ()
    language: str = "en"
    reason: str = ""
    conversation_id: str = ""
    agent: str = ""
    """A named agent to route it to now (a supervisor's take-over); '' = the queue decides."""


@dataclass(frozen=True)
class SendFollowUp(Action):
    """Send a message on another channel (``sms`` or ``chat``), optionally with a signed link."""

    channel: str
    template: str
    text: str = ""
    to: str = ""
    link_purpose: str = ""
    link_url: str = ""
    conversation_id: str = ""
    secret: bool = False
    """The text is a secret (a one-time code): the log keeps it masked; it goes to ``to`` only."""


@dataclass(frozen=True)
class OfferCall(Action):
    """Offer the customer a phone call that continues this conversation (chat-to-voice pivot)."""

    text: str = ""
    number: str = ""


@dataclass(frozen=True)
class Originate(Action):
    """Place an outbound call to ``number`` that continues ``conversation_id``.

    ``callback`` is a single-use nonce: the channel hands it back when the call is answered
    (``ConversationPort.open(callback=...)``), which is how the core knows the call is the one
    it placed, to the number it chose, and not a caller claiming so."""

    number: str
    conversation_id: str = ""
    reason: str = ""
    callback: str = ""


@dataclass(frozen=True)
class Hangup(Action):
    """End the call or close the chat."""

    reason: str = "completed"


@dataclass(frozen=True)
class ScreenPop(Action):
    """Deliver the conversation's context to the agent desktop (emitted alongside Transfer)."""

    conversation_id: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentSay(Action):
    """Show the customer what the agent holding the conversation typed (``message_id``: the
    desktop's id for it; ``seq``: where it stands in the conversation's log)."""

    agent_id: str
    name: str
    text: str
    message_id: str = ""


@dataclass(frozen=True)
class AgentJoined(Action):
    """Tell the customer that an agent (``name``) has joined the conversation."""

    agent_id: str
    name: str


@dataclass(frozen=True)
class AgentLeft(Action):
    """Tell the customer that the agent left: ``reason`` is ``handed_back``, ``closed`` or
    ``dropped`` (back in the queue)."""

    name: str
    reason: str


@dataclass(frozen=True)
class StaffNotice(Action):
    """A word for the staff member whose event this answers (why something was not done); never
    shown to the customer."""

    text: str


ACTION_TYPES: dict[str, type[Action]] = {
    cls.__name__: cls
    for cls in (Say, Ask, Transfer, SendFollowUp, OfferCall, Originate, Hangup, ScreenPop, AgentSay, AgentJoined,
                AgentLeft, StaffNotice)
}


def action_from_log(kind: str, payload: Mapping[str, Any]) -> Action | None:
    """An action rebuilt from its entry in the conversation's log (redacted, as every node reads
    it), for the node that carries out what another node's turn decided: a hand-back's prompt, an
    agent's message, a supervisor's steering. None for kinds not carried out that way."""
    cls = ACTION_TYPES.get(kind)
    if cls is None or cls is ScreenPop:
        return None
    names = {f.name for f in fields(cls)}
    data = {k: v for k, v in payload.items() if k in names}
    if isinstance(data.get("expect"), Mapping):
        known = {f.name for f in fields(Expect)}
        expect = {k: v for k, v in data["expect"].items() if k in known}
        if "options" in expect:
            expect["options"] = tuple(expect["options"])
        data["expect"] = Expect(**expect)
    if "skills" in data:
        data["skills"] = tuple(data["skills"])
    try:
        return cls(**data)
    except TypeError:
        return None
