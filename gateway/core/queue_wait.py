"""How long a customer would wait for a person, read before the core offers one.

Channels that know a queue register a probe with the core (``Orchestrator.register_queue_probe``):
the Asterisk side answers from AMI ``QueueSummary`` for calls (callers waiting, agents logged in
and available, the queue's average hold time), the agent desktop from its own queue for chats
(conversations waiting, agents signed in and free, the recent waits). Before a transfer the core
asks them; when the expected wait is longer than ``journeys.callback_offer_seconds`` and the
customer has a phone on file, the caller is offered a callback at a time they pick (or the first
slot the queue can serve), a text with a link to continue later, or to wait
(``config/journeys/long_wait.yaml``). A probe that fails or knows nothing answers None: the
transfer goes ahead as before, the wait is never guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WaitEstimate:
    """What a queue looks like now, and the wait a newcomer should expect (seconds)."""

    queue: str
    expected_seconds: float
    waiting: int = 0
    agents_available: int = 0
    source: str = ""


QueueProbe = Callable[[str, str], Awaitable["WaitEstimate | None"]]
"""``probe(queue, channel_family)``: the estimate for a customer on that channel ("voice",
"chat", "sms"), or None when the probe does not serve that channel or cannot tell."""


def queue_wait_estimate(waiting: int, logged_in: int, available: int, typical_seconds: float | None) -> float:
    """A newcomer's expected wait: none with an agent free; with nobody signed in, unknown (an
    hour, to offer the callback); else the typical wait for each customer ahead, shared by the
    agents who serve the queue."""
    if available > 0:
        return 0.0
    if logged_in <= 0:
        return 3600.0
    per_customer = typical_seconds if typical_seconds and typical_seconds > 0 else 60.0
    return per_customer * (waiting + 1) / logged_in


async def estimate(probes: Iterable[QueueProbe], queue: str, family: str) -> WaitEstimate | None:
    """The longest wait any probe reports for ``queue`` on ``family`` (None when none can tell)."""
    found: WaitEstimate | None = None
    for probe in probes:
        try:
            got = await probe(queue, family)
        except Exception as exc:  # a probe that fails only costs the offer; the transfer goes ahead
            log.warning("queue probe for %s failed: %s", queue, exc)
            continue
        if got is not None and (found is None or got.expected_seconds > found.expected_seconds):
            found = got
    return found
