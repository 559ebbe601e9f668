"""The web chat's wire protocol, sans-IO: JSON text frames in, typed messages out.

Client to gateway (one JSON object per WebSocket text frame)::

    {"type": "message", "text": "I want to pay my bill", "id": "c-42"}   # id optional: the page's own,
                                                          # so a message sent again after a reconnect is kept once
    {"type": "accept_call", "number": "+15551234567"}     # number optional: empty = the offered one
    {"type": "typing"}                                    # the customer is typing (shown to the agent)
    {"type": "queue_choice", "choice": "message" | "callback"}   # instead of waiting on line
    {"type": "ping"}

``/chat/ws?since=N`` (N: the last ``seq`` the page saw) replays what people sent while the page
was away (an agent's messages, a hand-back's question); every such frame carries its ``seq``.

Gateway to client::

    {"type": "session", "conversation_id": "...", "resumed": false}
    {"type": "say", "text": "..."}
    {"type": "ask", "text": "...", "expect": {"kind": "yesno", "options": [], "sensitive": false}}
    {"type": "offer_call", "text": "...", "number": "***4567"}   # the number on file, masked
    {"type": "followup", "text": "...", "url": "..."}
    {"type": "transfer", "queue": "...", "text": "..."}
    {"type": "hangup", "reason": "..."}
    {"type": "agent_joined", "name": "alice", "seq": 31}
    {"type": "agent_message", "name": "alice", "text": "...", "id": "d-5", "seq": 33}
    {"type": "agent_left", "name": "alice", "reason": "handed_back" | "closed" | "dropped", "text": "..."}
    {"type": "typing", "name": "alice"}                   # the agent is typing
    {"type": "seen", "id": "c-42"}                        # the agent's screen shows message c-42
    {"type": "queue", "position": 2, "wait_seconds": 40, "choices": ["message", "callback"]}
    {"type": "accepted", "id": 3}                         # message 3 reached the conversation
    {"type": "refused", "code": "too_long"|"rate_limited"|..., "message": "...", "text": "...",
     "retry_after": 1.5}                                  # retry_after: with the rate refusals
    {"type": "pong"}

Anything that is not one of the client shapes above is refused with a ``refused`` frame naming
the problem; a client that keeps sending bad frames or floods is closed (its socket only).
A message over the conversation's rate is refused with ``rate_limited``, one over its client
address's coarse bound with ``address_rate_limited``; both say in ``retry_after`` when to retry.
Refused messages are echoed back in ``text`` so the page can keep them for the customer to
send again: nothing typed is silently lost.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.core.actions import (
    Action,
    AgentJoined,
    AgentLeft,
    AgentSay,
    Ask,
    Hangup,
    OfferCall,
    Say,
    Transfer,
)

MAX_NUMBER_CHARS = 32
"""Longest phone number accepted in accept_call (E.164 is at most 16 with the plus)."""

PHONE_CHARS = set("+0123456789 -()")
MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A page's message id: short, plain."""
QUEUE_CHOICES = ("message", "callback")
LEFT_TEXT = {"handed_back": "{name} handed you back to our assistant.",
             "closed": "{name} closed the conversation.",
             "dropped": "{name} was disconnected. You're back in the queue, first in line."}


class ChatProtocolError(Exception):
    """A client frame broke the protocol; ``code`` names the rule, the message explains it."""

    def __init__(self, code: str, message: str, text: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.text = text


@dataclass(frozen=True)
class ClientText:
    """A typed chat message (``message_id``: the page's own id for it, or '')."""

    text: str
    message_id: str = ""


@dataclass(frozen=True)
class ClientTyping:
    """The customer is typing (relayed to the agent holding the chat, nothing else)."""


@dataclass(frozen=True)
class ClientQueueChoice:
    """The waiting customer would rather leave a message or be called back."""

    choice: str


@dataclass(frozen=True)
class ClientAcceptCall:
    """The customer pressed the call button (optionally giving a number)."""

    number: str = ""


@dataclass(frozen=True)
class ClientPing:
    """Keep-alive."""


ClientFrame = ClientText | ClientAcceptCall | ClientPing | ClientTyping | ClientQueueChoice


def parse_client_frame(raw: str, *, max_message_chars: int) -> ClientFrame:
    """Check one text frame against the client schema; raise :class:`ChatProtocolError`."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ChatProtocolError("bad_json", "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ChatProtocolError("bad_schema", "frame must be a JSON object")
    kind = data.get("type")
    allowed = {"message": {"type", "text", "id"}, "accept_call": {"type", "number"}, "ping": {"type"},
               "typing": {"type"}, "queue_choice": {"type", "choice"}}
    if kind not in allowed:
        raise ChatProtocolError("bad_schema", f"type must be one of: {', '.join(allowed)}")
    extra = set(data) - allowed[kind]
    if extra:
        raise ChatProtocolError("bad_schema", f"unexpected field(s): {', '.join(sorted(extra))}")
    if kind == "ping":
        return ClientPing()
    if kind == "typing":
        return ClientTyping()
    if kind == "queue_choice":
        if data.get("choice") not in QUEUE_CHOICES:
            raise ChatProtocolError("bad_schema", "choice must be message or callback")
        return ClientQueueChoice(choice=str(data["choice"]))
    if kind == "accept_call":
        number = data.get("number", "")
        if not isinstance(number, str) or len(number) > MAX_NUMBER_CHARS or not set(number) <= PHONE_CHARS:
            raise ChatProtocolError("bad_number", "number must be a phone number such as +15551234567")
        return ClientAcceptCall(number=number.replace(" ", "").replace("-", "").replace("(", "").replace(")", ""))
    text = data.get("text")
    if not isinstance(text, str):
        raise ChatProtocolError("bad_schema", "message needs a text string")
    if len(text) > max_message_chars:
        raise ChatProtocolError(
            "too_long",
            f"message too long: {len(text)} characters, the limit is {max_message_chars}; "
            "please split it",
            text=text,
        )
    if not text.strip():
        raise ChatProtocolError("empty", "message is empty")
    message_id = data.get("id", "")
    if not isinstance(message_id, str) or (message_id and not MESSAGE_ID.match(message_id)):
        raise ChatProtocolError("bad_schema", "id must be 1-64 letters, digits, _ or -", text=text)
    return ClientText(text=text, message_id=message_id)


def encode_action(action: Action) -> dict[str, Any] | None:
    """The client frame for one core action, or None when the chat shows nothing for it.

    ``SendFollowUp`` is not shown from here: its sink signs the link and pushes it (so the
    customer sees it once, with the link).
    """
    if isinstance(action, Ask):
        return {
            "type": "ask",
            "text": action.text,
            "expect": {
                "kind": action.expect.kind,
                "options": list(action.expect.options),
                "sensitive": action.expect.sensitive,
            },
        }
    if isinstance(action, Say):
        return {"type": "say", "text": action.text}
    if isinstance(action, OfferCall):
        # the page needs to know a number is on file, not the number itself
        return {"type": "offer_call", "text": action.text,
                "number": ("***" + action.number[-4:]) if action.number else ""}
    if isinstance(action, Transfer):
        return {"type": "transfer", "queue": action.queue,
                "text": "Connecting you with an agent who can see this conversation."}
    if isinstance(action, Hangup):
        return {"type": "hangup", "reason": action.reason}
    if isinstance(action, AgentSay):
        return {"type": "agent_message", "name": action.name, "text": action.text, "id": action.message_id}
    if isinstance(action, AgentJoined):
        return {"type": "agent_joined", "name": action.name}
    if isinstance(action, AgentLeft):
        return {"type": "agent_left", "name": action.name, "reason": action.reason,
                "text": LEFT_TEXT.get(action.reason, "{name} left.").format(name=action.name)}
    return None


def action_text(action: Action) -> str:
    """Plain text of an action for text-only channels (SMS); '' when it has none."""
    if isinstance(action, (Say, Ask)):
        return action.text
    if isinstance(action, OfferCall):
        offer = action.text or "Would you like us to call you?"
        return f"{offer} Reply CALL and we will call you."
    if isinstance(action, Transfer):
        return "An agent will contact you shortly."
    if isinstance(action, AgentSay):
        return action.text
    return ""


def dumps(frame: dict[str, Any]) -> str:
    """Serialize a gateway frame."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
