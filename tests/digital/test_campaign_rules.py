"""The campaign's rules without I/O: quiet hours across midnight and daylight saving, backoff,
and outcomes read from a conversation's log."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gateway.context.store import LoggedEvent
from gateway.digital.campaigns.model import CampaignConfig, Outcome
from gateway.digital.campaigns.rules import call_outcome, quiet_until, read_log, retry_delay_seconds

CFG = CampaignConfig(quiet_start="21:00", quiet_end="08:00", timezone="UTC")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.parametrize("now,tz,until", [
    (utc(2026, 3, 10, 1, 0), "America/New_York", utc(2026, 3, 10, 12, 0)),    # 21:00 EDT the evening before
    (utc(2026, 3, 10, 13, 0), "America/New_York", None),                        # 09:00 EDT
    (utc(2026, 3, 8, 6, 30), "America/New_York", utc(2026, 3, 8, 12, 0)),      # 01:30 EST, clocks go forward at 2
    (utc(2026, 3, 7, 6, 30), "America/New_York", utc(2026, 3, 7, 13, 0)),      # 01:30 EST the day before: 08:00 EST
    (utc(2026, 3, 10, 20, 0), "Europe/Berlin", utc(2026, 3, 11, 7, 0)),        # 21:00 CET, ends tomorrow
    (utc(2026, 3, 10, 19, 59), "Europe/Berlin", None),
    (utc(2026, 3, 10, 23, 0), "Asia/Kolkata", utc(2026, 3, 11, 2, 30)),        # 04:30 IST, a half-hour zone
])
def test_quiet_hours(now, tz, until):
    found = quiet_until(now, tz, CFG)
    assert (found.astimezone(timezone.utc) if found else None) == until


def test_no_quiet_hours_when_start_equals_end():
    assert quiet_until(utc(2026, 3, 10, 3, 0), "UTC", CampaignConfig(quiet_start="00:00", quiet_end="00:00")) is None


def test_backoff_doubles_up_to_the_cap():
    cfg = CampaignConfig(retry_minutes=30, retry_backoff=2, max_retry_minutes=100)
    assert [retry_delay_seconds(cfg, n) / 60 for n in (1, 2, 3, 4)] == [30, 60, 100, 100]


def log(*entries: tuple[str, str, dict]) -> list[LoggedEvent]:
    return [LoggedEvent(i + 1, "c", 0.0, channel, kind, payload) for i, (channel, kind, payload) in enumerate(entries)]


def test_outcomes_from_the_log():
    placed = ("bot", "Originate", {"number": "+1"})
    answered = ("voice", "CallStarted", {"outbound": True})
    closed = ("voice", "ChannelClosed", {"reason": "hangup"})
    machine = ("system", "AnsweringMachine", {"verdict": "machine"})
    human = ("system", "AnsweringMachine", {"verdict": "human"})

    def outcome(*entries, now=10.0):
        return call_outcome(read_log(log(*entries), 0), placed_at=0.0, now=now, outcome_wait=300, max_call=3600)

    assert outcome(placed) is None
    assert outcome(placed, now=301) is Outcome.UNKNOWN
    assert outcome(placed, ("telephony", "CallFailed", {"reason": "busy"})) is Outcome.BUSY
    assert outcome(placed, answered) is None                       # in progress
    assert outcome(placed, answered, closed) is Outcome.ANSWERED
    assert outcome(placed, answered, human, closed) is Outcome.ANSWERED
    assert outcome(placed, answered, machine, closed) is Outcome.MACHINE
    assert outcome(placed, machine, closed) is Outcome.MACHINE     # a verdict before the session opened
    assert outcome(placed, answered, machine, now=3601) is Outcome.MACHINE
    assert outcome(placed, answered, ("voice", "OptOut", {"via": "key"})) is Outcome.OPTED_OUT
    assert outcome(placed, answered, ("voice", "UserSaid", {"text": "yes"}), machine, closed) is Outcome.ANSWERED
    facts = read_log(log(placed, ("sms", "ChatMessage", {"text": "yes"})), 1)
    assert facts.replied and not facts.originated                  # only what came after the baseline
