"""Events: what a channel tells the conversation core.

Every channel (phone call, web chat, SMS, agent desktop, follow-up page) turns what it receives
into one of these small frozen dataclasses and hands it to the core. Events carry no channel
objects, only plain values, so they can be logged, redacted and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from gateway.core.channels import Channel


@dataclass(frozen=True)
class Event:
    """Base of every event. ``channel`` names the surface it came from: voice, chat, sms, web, agent
    (a :class:`~gateway.core.channels.Channel` name; every event type sets its own default)."""

    if TYPE_CHECKING:  # declared by every event type, after its own fields (a base field would come first)
        channel: str

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class CallStarted(Event):
    """A phone call reached the gateway (inbound) or was answered (outbound)."""

    caller_id: str = ""
    dialed: str = ""
    channel: str = Channel.VOICE
    call_id: str = ""
    outbound: bool = False


@dataclass(frozen=True)
class ChatStarted(Event):
    """A web chat (or other text channel) session opened."""

    channel: str = Channel.CHAT
    customer_ref: str = ""


@dataclass(frozen=True)
class UserSaid(Event):
    """The caller said something; ``text`` is the recognizer's best hypothesis."""

    text: str
    confidence: float = 1.0
    channel: str = Channel.VOICE


@dataclass(frozen=True)
class DtmfPressed(Event):
    """One DTMF digit (0-9, *, #, A-D), from RFC 4733, SIP INFO, AGI or AudioSocket."""

    digit: str
    channel: str = Channel.VOICE


@dataclass(frozen=True)
class ChatMessage(Event):
    """A typed message from web chat or SMS. ``message_id``: the page's own id for it, so a
    message sent again after a reconnect is kept once."""

    text: str
    channel: str = Channel.CHAT
    message_id: str = ""


@dataclass(frozen=True)
class LinkOpened(Event):
    """A signed follow-up link was opened (``purpose`` is the link's action)."""

    token_id: str
    purpose: str = ""
    channel: str = Channel.WEB


@dataclass(frozen=True)
class FormSubmitted(Event):
    """The page behind a follow-up link was completed; ``fields`` holds what was entered."""

    purpose: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    channel: str = Channel.WEB


@dataclass(frozen=True)
class Silence(Event):
    """No input for ``seconds`` after a prompt (the no-input timeout fired)."""

    seconds: float
    channel: str = Channel.VOICE


@dataclass(frozen=True)
class CallAccepted(Event):
    """The customer accepted an offered call (chat-to-voice pivot)."""

    number: str = ""
    channel: str = Channel.CHAT


@dataclass(frozen=True)
class ChannelClosed(Event):
    """The channel ended: caller hung up, chat closed, connection lost."""

    reason: str = "closed"
    channel: str = Channel.VOICE


@dataclass(frozen=True)
class StaffEvent(Event):
    """Base of what a person on the agent side does in a conversation (an agent, a supervisor).

    Never the customer's answer: the core logs it under the staff channel, never counts it as
    the customer speaking, and never lets it prove anything for a customer's session."""


@dataclass(frozen=True)
class AgentConnected(StaffEvent):
    """A human agent picked up the transferred conversation (accepted it on the desktop, or
    answered the call, as AMI reports it)."""

    agent_id: str
    channel: str = Channel.AGENT
    name: str = ""


@dataclass(frozen=True)
class AgentMessage(StaffEvent):
    """The agent holding the conversation typed ``text`` to the customer. ``message_id`` is the
    desktop's own id for it: a message sent again after a reconnect is kept once."""

    agent_id: str
    text: str
    message_id: str = ""
    channel: str = Channel.AGENT


@dataclass(frozen=True)
class AgentFollowUp(StaffEvent):
    """The agent asks for a follow-up ``via`` ``sms`` (to the phone on file) or ``link`` (a
    signed link into the chat) for ``purpose`` (a link purpose, or '' for a plain SMS)."""

    agent_id: str
    via: str
    purpose: str = ""
    channel: str = Channel.AGENT


@dataclass(frozen=True)
class HandBack(StaffEvent):
    """The agent hands the conversation back to the bot at ``step`` of ``journey``."""

    agent_id: str
    journey: str
    step: str = ""
    channel: str = Channel.AGENT


@dataclass(frozen=True)
class Disposition(StaffEvent):
    """The agent closes the conversation with a disposition ``code`` and ``notes``."""

    agent_id: str
    code: str
    notes: str = ""
    channel: str = Channel.AGENT


@dataclass(frozen=True)
class AgentDropped(StaffEvent):
    """The agent's desktop went away for longer than the grace period: the conversation is
    back in the queue."""

    agent_id: str
    channel: str = Channel.AGENT


@dataclass(frozen=True)
class TakeOver(StaffEvent):
    """A supervisor routes the conversation to ``agent`` now (away from the bot or the queue)."""

    supervisor: str
    agent: str
    queue: str = ""
    channel: str = Channel.SUPERVISOR


@dataclass(frozen=True)
class Steer(StaffEvent):
    """A supervisor tells the bot what to do next: ``goto`` a step of the current journey,
    ``offer_agent``, or ``end`` politely."""

    supervisor: str
    instruction: str
    step: str = ""
    channel: str = Channel.SUPERVISOR


@dataclass(frozen=True)
class QueueChoice(Event):
    """The customer waiting for an agent chose to ``message`` (leave a message) or to be called
    back (``callback``) instead of waiting on line."""

    choice: str
    channel: str = Channel.CHAT


@dataclass(frozen=True)
class RecognitionFailed(Event):
    """Speech was heard but could not be recognized (engine error or empty result)."""

    reason: str = ""
    channel: str = Channel.VOICE


CALL_FAILURES = ("no_answer", "busy", "congestion", "failed")
"""Why a call the gateway placed was not answered, as :class:`CallFailed` reports it."""


@dataclass(frozen=True)
class CallFailed(Event):
    """A call the gateway placed (``Originate``) was not answered: ``reason`` is one of
    :data:`CALL_FAILURES`; ``detail`` is what the PBX or the SIP peer said (an AMI Reason code,
    a SIP status). An answered call shows as the voice channel's ``CallStarted`` instead."""

    reason: str = "failed"
    detail: str = ""
    channel: str = Channel.TELEPHONY


@dataclass(frozen=True)
class TransferFailed(Event):
    """The connector could not move the call to people (the PBX refused the REFER, the queue's
    extension is missing, no reply in time): the caller is still on the line with the bot."""

    queue: str = ""
    detail: str = ""
    channel: str = Channel.VOICE


@dataclass(frozen=True)
class AnsweringMachine(Event):
    """The voice channel's answering-machine detection on a call the gateway placed:
    ``verdict`` human, machine or unknown, decided ``seconds`` after the answer; for a machine the
    event comes once its beep has ended (``beep``) or its greeting has, ``message_at`` seconds
    after the answer, so a message can follow."""

    verdict: str
    seconds: float = 0.0
    message_at: float = 0.0
    reason: str = ""
    beep: bool = False
    channel: str = Channel.VOICE


OPT_OUT_ROUTES = ("voice", "key", "sms", "chat", "agent")
"""How a customer can ask to be called and texted no more."""


@dataclass(frozen=True)
class OptOut(Event):
    """The customer asked not to be called or texted again: ``via`` says how (an SMS reply
    STOP, a key on a call the gateway placed, the words on a call or in a chat)."""

    via: str = "sms"
    number: str = ""
    """The number that asked (an SMS sender: a claim, honoured since it only means calling less)."""
    channel: str = Channel.SMS


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        CallStarted,
        ChatStarted,
        UserSaid,
        DtmfPressed,
        ChatMessage,
        LinkOpened,
        FormSubmitted,
        Silence,
        CallAccepted,
        ChannelClosed,
        AgentConnected,
        RecognitionFailed,
        CallFailed,
        OptOut,
        AgentMessage,
        AgentFollowUp,
        HandBack,
        Disposition,
        AgentDropped,
        TakeOver,
        Steer,
        QueueChoice,
        AnsweringMachine,
        TransferFailed,
    )
}
