"""What a campaign is made of: its settings, its contacts, their attempts and outcome codes."""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, fields, replace
from datetime import time
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.config import CampaignSettings

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""A campaign's name: lower-case letters, digits, - and _ (it appears in URLs and commands)."""


class CampaignState(str, enum.Enum):
    DRAFT = "draft"        # created, contacts may be imported; nothing is sent
    RUNNING = "running"    # the runner works through its contacts
    PAUSED = "paused"      # nothing new is started; calls in progress finish and are recorded
    DONE = "done"          # every contact has a final status


class ContactStatus(str, enum.Enum):
    PENDING = "pending"      # waiting for its next attempt (``next_at``)
    ACTIVE = "active"        # an attempt is in progress (an SMS awaiting a reply, a call)
    REACHED = "reached"      # answered the call or replied
    OPTED_OUT = "opted_out"  # asked not to be contacted (the number is on the do-not-call list)
    DNC = "dnc"              # on the do-not-call list before it was contacted
    EXHAUSTED = "exhausted"  # every attempt used without reaching them
    FAILED = "failed"        # cannot be contacted (no number on file, a number the policy refuses)


FINAL_STATUSES = frozenset({ContactStatus.REACHED, ContactStatus.OPTED_OUT, ContactStatus.DNC,
                            ContactStatus.EXHAUSTED, ContactStatus.FAILED})


class Outcome(str, enum.Enum):
    """The outcome code of one attempt."""

    SMS_SENT = "sms_sent"          # in progress: the reminder SMS went out, waiting for a reply
    CALLING = "calling"            # in progress: the call was placed
    REPLIED = "replied"            # the customer answered the SMS (any channel: a reply, the link, a chat)
    NO_REPLY = "no_reply"          # no answer to the SMS in time: a call follows
    ANSWERED = "answered"          # a person answered the call
    MACHINE = "machine"            # an answering machine answered (the conversation's log says so)
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CONGESTION = "congestion"
    FAILED = "failed"              # the PBX or the SMS provider failed
    REFUSED = "refused"            # the outbound policy refused (budgets, prefixes) or no number on file
    OPTED_OUT = "opted_out"        # the customer opted out during this attempt
    DNC = "dnc"                    # the number was on the do-not-call list; nothing was sent
    UNKNOWN = "unknown"            # the call was placed and nothing was reported in time
    INTERRUPTED = "interrupted"    # claimed before a restart and never carried out


IN_PROGRESS = frozenset({Outcome.SMS_SENT, Outcome.CALLING})
RETRIED = frozenset({Outcome.NO_ANSWER, Outcome.BUSY, Outcome.MACHINE, Outcome.CONGESTION, Outcome.UNKNOWN,
                     Outcome.INTERRUPTED, Outcome.FAILED})
"""Outcomes after which the contact gets another attempt (with backoff) while attempts remain."""
TRANSIENT_REFUSALS = frozenset({"gateway_limit", "conversation_limit", "limits_unavailable", "dnc_unavailable",
                                "no_telephony"})
"""Policy refusals that pass (a budget refills, a store comes back): retried like a busy line."""


class AttemptState(str, enum.Enum):
    CLAIMED = "claimed"  # taken for this attempt (in one transaction); not carried out yet
    PLACED = "placed"    # the SMS was sent or the call placed; the outcome is awaited
    DONE = "done"        # the outcome is final


def parse_clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ``ValueError`` naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as America/New_York)") from None


@dataclass(frozen=True)
class CampaignConfig:
    """How one campaign runs (defaults from ``settings.campaigns``; each may be set per campaign)."""

    journey: str = "appointment"
    calls_per_minute: int = 10
    max_concurrent: int = 5
    timezone: str = "UTC"
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    max_attempts: int = 4
    retry_minutes: float = 30.0
    retry_backoff: float = 2.0
    max_retry_minutes: float = 1440.0
    sms_first: bool = True
    escalate_after_minutes: float = 30.0

    @classmethod
    def defaults(cls, settings: CampaignSettings) -> "CampaignConfig":
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)})

    def with_changes(self, changes: Mapping[str, Any]) -> "CampaignConfig":
        """A copy with ``changes`` applied and checked; ``ValueError`` names a bad one."""
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown campaign setting(s): {', '.join(unknown)}")
        typed: dict[str, Any] = {}
        for name, value in changes.items():
            current = getattr(self, name)
            try:
                if isinstance(current, bool):
                    if not isinstance(value, bool):
                        raise TypeError
                    typed[name] = value
                else:
                    typed[name] = type(current)(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: {value!r} is not a {type(current).__name__}") from None
        config = replace(self, **typed)
        config.check()
        return config

    def check(self) -> None:
        if not 1 <= self.calls_per_minute <= 600:
            raise ValueError("calls_per_minute must be 1 to 600")
        if not 1 <= self.max_concurrent <= 500:
            raise ValueError("max_concurrent must be 1 to 500")
        if not 1 <= self.max_attempts <= 20:
            raise ValueError("max_attempts must be 1 to 20")
        if self.retry_minutes <= 0 or self.max_retry_minutes <= 0 or self.escalate_after_minutes <= 0:
            raise ValueError("retry_minutes, max_retry_minutes and escalate_after_minutes must be above 0")
        if not 1.0 <= self.retry_backoff <= 10.0:
            raise ValueError("retry_backoff must be 1 to 10")
        if not NAME.match(self.journey.replace("-", "_")):
            raise ValueError(f"journey {self.journey!r} is not a journey name")
        zone(self.timezone)
        for name in ("quiet_start", "quiet_end"):
            value = getattr(self, name)
            if not re.match(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", value):
                raise ValueError(f"{name} must be HH:MM (24 h), not {value!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Campaign:
    name: str
    state: CampaignState
    config: CampaignConfig
    created_at: float


@dataclass(frozen=True)
class Contact:
    """One person to remind. ``phone`` is where the SMS goes; calls go only to the number on
    file of ``customer_id`` (the core decides, docs/trust.md)."""

    campaign: str
    ref: str
    phone: str
    customer_id: str = ""
    name: str = ""
    tz: str = ""
    text: str = ""
    status: ContactStatus = ContactStatus.PENDING
    attempts: int = 0
    next_at: float = 0.0
    conversation_id: str = ""
    sms_sent: bool = False
    last_outcome: str = ""


@dataclass(frozen=True)
class Attempt:
    campaign: str
    ref: str
    n: int
    kind: str                # "sms" or "call"
    state: AttemptState
    outcome: str = ""
    conversation_id: str = ""
    baseline: int = -1       # the conversation log's last seq before the attempt (-1: not known yet)
    started_at: float = 0.0
    placed_at: float = 0.0
    ended_at: float = 0.0
    node: str = ""
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data
