"""The campaign's rules, without I/O: quiet hours, backoff, which attempt comes next, and what
a conversation's log says about an attempt (its outcome code).

An attempt's outcome is read from the conversation's event log after the attempt began (its
``baseline`` sequence number), so every node and every restart reads the same:

- ``CallFailed`` (reported by the telephony channel): no_answer, busy, congestion, failed;
- the answered call: the voice channel's ``CallStarted`` with ``outbound`` (or the core's
  ``CallbackAnswered`` note); it is over at that channel's ``ChannelClosed``;
- ``AnsweringMachine`` with ``verdict: machine`` (a note or an event) makes it ``machine``;
- ``OptOut``, or the core's ``OptedOut`` note: ``opted_out``;
- customer activity on any channel (a reply, the link opened, words on the call): reached;
- ``CallRefused`` (the outbound policy): its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from gateway.core.channels import Channel
from gateway.digital.campaigns.model import (RETRIED, TRANSIENT_REFUSALS, CampaignConfig, Contact, ContactStatus,
                                             Outcome, parse_clock, zone)

ANSWER_KINDS = frozenset({"ChatMessage", "UserSaid", "DtmfPressed", "LinkOpened", "FormSubmitted", "CallAccepted"})
NOT_THE_CUSTOMER = frozenset({"bot", "system", "outreach", "telephony"})
"""Channels of log entries the customer did not write (the core, the dialer, the PBX's report)."""


def quiet_until(now: datetime, tz_name: str, config: CampaignConfig) -> datetime | None:
    """When the quiet hours around ``now`` end in the customer's time zone, or None when ``now``
    is outside them (quiet from ``quiet_start`` to ``quiet_end``, across midnight when start > end)."""
    tz = zone(tz_name or config.timezone)
    local = now.astimezone(tz)
    start, end = parse_clock(config.quiet_start), parse_clock(config.quiet_end)
    if start == end:
        return None
    t = local.time()
    if start < end:
        inside = start <= t < end
    else:
        inside = t >= start or t < end
    if not inside:
        return None
    day = local.date() if (start < end or t < end) else local.date() + timedelta(days=1)
    # the wall-clock end in that zone (a DST gap is passed through as the zone resolves it)
    return datetime.combine(day, end, tzinfo=tz)


def retry_delay_seconds(config: CampaignConfig, calls_made: int) -> float:
    """Wait after the ``calls_made``-th unsuccessful call: retry_minutes, times retry_backoff for
    each call before it, at most max_retry_minutes."""
    minutes = config.retry_minutes * config.retry_backoff ** max(0, calls_made - 1)
    return min(minutes, config.max_retry_minutes) * 60.0


def next_kind(config: CampaignConfig, contact: Contact) -> str:
    """``sms`` while a campaign that starts by SMS has not sent the contact one, else ``call``."""
    return "sms" if config.sms_first and not contact.sms_sent else "call"


@dataclass(frozen=True)
class LogFacts:
    """What the conversation's log says happened since an attempt began."""

    originated: bool = False
    refused: str = ""
    failed: str = ""
    answered: bool = False
    ended: bool = False
    machine: bool = False
    opted_out: bool = False
    replied: bool = False


def read_log(events: Iterable[Any], baseline: int) -> LogFacts:
    """Facts from ``events`` (``LoggedEvent``: seq, channel, kind, payload) after ``baseline``."""
    facts: dict[str, Any] = {}
    voice_channel = ""
    for event in events:
        if event.seq <= baseline:
            continue
        kind, channel, payload = event.kind, event.channel, event.payload
        if kind == "Originate":
            facts["originated"] = True
        elif kind == "CallRefused":
            facts["refused"] = str(payload.get("reason") or "refused")
        elif kind == "CallFailed":
            facts["failed"] = str(payload.get("reason") or "failed")
        elif kind == "CallbackAnswered" or (kind == "CallStarted" and payload.get("outbound")
                                            and Channel.of(channel).is_voice):
            facts["answered"] = True
            voice_channel = voice_channel or (channel if channel != "system" else "")
        elif kind == "ChannelClosed" and (facts.get("answered") or facts.get("machine")) \
                and Channel.of(channel).is_voice and (not voice_channel or channel == voice_channel):
            facts["ended"] = True
        elif kind == "AnsweringMachine" and str(payload.get("verdict", "")) == "machine":
            facts["machine"] = True
        elif kind in ("OptOut", "OptedOut"):
            facts["opted_out"] = True
        if kind in ANSWER_KINDS and channel not in NOT_THE_CUSTOMER:
            facts["replied"] = True
    return LogFacts(**facts)


@dataclass(frozen=True)
class Verdict:
    """An attempt's final outcome and what it means for its contact."""

    outcome: Outcome
    status: ContactStatus
    next_at: float = 0.0
    detail: str = ""


def call_outcome(facts: LogFacts, *, placed_at: float, now: float, outcome_wait: float,
                 max_call: float) -> Outcome | None:
    """The outcome of a placed call, or None while it is still ringing or in progress."""
    if facts.opted_out:
        return Outcome.OPTED_OUT
    if facts.failed:
        return Outcome(facts.failed) if facts.failed in {o.value for o in Outcome} else Outcome.FAILED
    if facts.answered or facts.machine:
        if facts.ended or now - placed_at >= max_call:
            return Outcome.MACHINE if facts.machine and not facts.replied else Outcome.ANSWERED
        return None
    if now - placed_at >= outcome_wait:
        return Outcome.UNKNOWN
    return None


def verdict(config: CampaignConfig, contact: Contact, outcome: Outcome, *, now: float, calls_made: int,
            replied: bool = False, detail: str = "") -> Verdict:
    """What ``outcome`` of the contact's latest attempt means for the contact."""
    if outcome is Outcome.OPTED_OUT:
        return Verdict(outcome, ContactStatus.OPTED_OUT, detail=detail)
    if outcome is Outcome.DNC:
        return Verdict(outcome, ContactStatus.DNC, detail=detail)
    if replied or outcome in (Outcome.ANSWERED, Outcome.REPLIED):
        return Verdict(outcome, ContactStatus.REACHED, detail=detail)
    attempts_left = contact.attempts < config.max_attempts
    if outcome is Outcome.NO_REPLY:
        status = ContactStatus.PENDING if attempts_left else ContactStatus.EXHAUSTED
        return Verdict(outcome, status, now, detail)
    if outcome is Outcome.REFUSED and detail in TRANSIENT_REFUSALS:
        retry = True
    else:
        retry = outcome in RETRIED
    if not retry:
        return Verdict(outcome, ContactStatus.FAILED, detail=detail)
    if not attempts_left:
        return Verdict(outcome, ContactStatus.EXHAUSTED, detail=detail)
    return Verdict(outcome, ContactStatus.PENDING, now + retry_delay_seconds(config, max(1, calls_made)), detail)
