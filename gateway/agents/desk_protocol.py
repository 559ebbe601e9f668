"""What the agent desktop and the supervisor page may send, sans-IO: JSON text in, typed commands out.

Agent desktop (``/agent/ws``)::

    {"type": "ready", "skills": [...], "languages": [...], "available": true}
    {"type": "accept", "conversation_id": "..."}            # take it from the queue (or an offer)
    {"type": "decline", "conversation_id": "..."}           # let the offer go to the next agent
    {"type": "send", "conversation_id": "...", "text": "...", "id": "d-17"}   # id: the desktop's, for resends
    {"type": "typing", "conversation_id": "..."}
    {"type": "follow_up", "conversation_id": "...", "via": "sms" | "link", "purpose": "track_order"}
    {"type": "hand_back", "conversation_id": "...", "journey": "order_status", "step": "ask_order"}
    {"type": "close", "conversation_id": "...", "code": "resolved", "notes": "..."}

Supervisor page (``/supervisor/ws``)::

    {"type": "watch", "conversation_id": "..."}             # its transcript, then its live lines
    {"type": "take_over", "conversation_id": "...", "agent": "bob"}   # agent '' = the supervisor
    {"type": "whisper", "conversation_id": "...", "text": "..."}      # to the agent holding it
    {"type": "steer", "conversation_id": "...", "instruction": "goto" | "offer_agent" | "end", "step": "..."}

Anything else raises :class:`DeskProtocolError` with a message fit to send back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.agents.registry import clean_labels

MAX_NOTES_CHARS = 2000
MAX_NAME_CHARS = 64
ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
"""Conversation ids (uuid hex), desktop message ids, journey and step names, codes."""


class DeskProtocolError(ValueError):
    """A frame broke the desktop protocol; the message says how."""


@dataclass(frozen=True)
class Ready:
    skills: frozenset[str]
    languages: frozenset[str]
    available: bool


@dataclass(frozen=True)
class Accept:
    conversation_id: str


@dataclass(frozen=True)
class Decline:
    conversation_id: str


@dataclass(frozen=True)
class Send:
    conversation_id: str
    text: str
    message_id: str


@dataclass(frozen=True)
class Typing:
    conversation_id: str


@dataclass(frozen=True)
class FollowUp:
    conversation_id: str
    via: str
    purpose: str


@dataclass(frozen=True)
class GiveBack:
    conversation_id: str
    journey: str
    step: str


@dataclass(frozen=True)
class Close:
    conversation_id: str
    code: str
    notes: str


@dataclass(frozen=True)
class Watch:
    conversation_id: str


@dataclass(frozen=True)
class TakeOverCmd:
    conversation_id: str
    agent: str


@dataclass(frozen=True)
class Whisper:
    conversation_id: str
    text: str


@dataclass(frozen=True)
class SteerCmd:
    conversation_id: str
    instruction: str
    step: str


DeskCommand = Ready | Accept | Decline | Send | Typing | FollowUp | GiveBack | Close
SupervisorCommand = Watch | TakeOverCmd | Whisper | SteerCmd

DESK_FIELDS: dict[str, set[str]] = {
    "ready": {"skills", "languages", "available"},
    "accept": {"conversation_id"},
    "decline": {"conversation_id"},
    "send": {"conversation_id", "text", "id"},
    "typing": {"conversation_id"},
    "follow_up": {"conversation_id", "via", "purpose"},
    "hand_back": {"conversation_id", "journey", "step"},
    "close": {"conversation_id", "code", "notes"},
}
SUPERVISOR_FIELDS: dict[str, set[str]] = {
    "watch": {"conversation_id"},
    "take_over": {"conversation_id", "agent"},
    "whisper": {"conversation_id", "text"},
    "steer": {"conversation_id", "instruction", "step"},
}


def _load(raw: str, allowed: dict[str, set[str]]) -> tuple[str, dict[str, Any]]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise DeskProtocolError("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise DeskProtocolError("frame must be a JSON object")
    kind = data.get("type")
    if kind not in allowed:
        raise DeskProtocolError(f"type must be one of: {', '.join(allowed)}")
    extra = set(data) - allowed[kind] - {"type"}
    if extra:
        raise DeskProtocolError(f"unexpected field(s): {', '.join(sorted(extra))}")
    return str(kind), data


def _id(data: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (value and not ID.match(value)) or (required and not value):
        raise DeskProtocolError(f"{key} must be a short id (letters, digits, _ . : -)")
    return value


def _text(data: dict[str, Any], key: str, limit: int, *, required: bool = True) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise DeskProtocolError(f"{key} must be a string")
    if len(value) > limit:
        raise DeskProtocolError(f"{key} is {len(value)} characters; the limit is {limit}")
    if required and not value.strip():
        raise DeskProtocolError(f"{key} is empty")
    return value


def parse_desk_frame(raw: str, *, max_message_chars: int) -> DeskCommand:
    """One agent-desktop frame as a command; :class:`DeskProtocolError` otherwise."""
    kind, data = _load(raw, DESK_FIELDS)
    if kind == "ready":
        try:
            return Ready(clean_labels(data.get("skills", [])), clean_labels(data.get("languages", [])),
                         bool(data.get("available", True)))
        except ValueError as exc:
            raise DeskProtocolError(f"ready: {exc}") from None
    cid = _id(data, "conversation_id")
    if kind == "accept":
        return Accept(cid)
    if kind == "decline":
        return Decline(cid)
    if kind == "typing":
        return Typing(cid)
    if kind == "send":
        return Send(cid, _text(data, "text", max_message_chars), _id(data, "id", required=False))
    if kind == "follow_up":
        via = data.get("via")
        if via not in ("sms", "link"):
            raise DeskProtocolError("via must be sms or link")
        return FollowUp(cid, str(via), _id(data, "purpose", required=via == "link"))
    if kind == "hand_back":
        return GiveBack(cid, _id(data, "journey"), _id(data, "step", required=False))
    return Close(cid, _id(data, "code"), _text(data, "notes", MAX_NOTES_CHARS, required=False))


def parse_supervisor_frame(raw: str, *, max_message_chars: int) -> SupervisorCommand:
    """One supervisor-page frame as a command; :class:`DeskProtocolError` otherwise."""
    kind, data = _load(raw, SUPERVISOR_FIELDS)
    cid = _id(data, "conversation_id")
    if kind == "watch":
        return Watch(cid)
    if kind == "take_over":
        return TakeOverCmd(cid, _id(data, "agent", required=False))
    if kind == "whisper":
        return Whisper(cid, _text(data, "text", max_message_chars))
    instruction = data.get("instruction")
    if instruction not in ("goto", "offer_agent", "end"):
        raise DeskProtocolError("instruction must be goto, offer_agent or end")
    return SteerCmd(cid, str(instruction), _id(data, "step", required=instruction == "goto"))
