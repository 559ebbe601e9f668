"""Authority for anything that costs money or reaches a person: outbound calls and SMS.

The core places a call or sends an SMS only to a destination it can vouch for (the number on
file, or a number a verified customer typed and confirmed), and only within the limits below:

- the destination is an E.164 number, not in ``outbound.deny_prefixes`` (premium-rate and
  high-cost ranges by default: the classic toll-fraud targets) and, when ``allow_prefixes`` is
  set, inside one of them;
- at most ``calls_per_conversation_per_hour`` calls and ``sms_per_conversation_per_hour`` SMS per
  conversation, and ``calls_per_minute`` / ``sms_per_minute`` across the gateway (every node,
  with the Redis backend), so a flood of conversations cannot turn the gateway into a dialer;
- the number is not on the do-not-call list (:mod:`gateway.context.dnc`): a customer who opted
  out is never called or texted again, whatever path asks (a campaign, a reminder, a callback,
  a follow-up, a one-time code).

A limit or a list that cannot be checked (its store is down) refuses: an outbound action is
never worth an unchecked bill, or a call to someone who said stop.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from gateway.config import OutboundSettings
from gateway.context.counters import Counters
from gateway.context.dnc import DoNotCall
from gateway.context.store import StoreError

log = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_SEPARATORS = re.compile(r"[\s().\-/]")


@dataclass(frozen=True)
class Refusal:
    """Why an outbound action was not carried out: ``reason`` for logs and metrics, ``text`` for the customer."""

    reason: str
    text: str


def e164(number: str) -> str:
    """``number`` as E.164 (``+`` and 8-15 digits), or '' when it is not one."""
    text = _SEPARATORS.sub("", number or "")
    if text.startswith("00"):
        text = "+" + text[2:]
    return text if E164.match(text) else ""


class OutboundPolicy:
    """Checks destinations and takes from the shared outbound budgets."""

    def __init__(self, settings: OutboundSettings, counters: Counters, dnc: DoNotCall | None = None) -> None:
        self.settings = settings
        self.counters = counters
        self.dnc = dnc
        """The do-not-call list (None: none kept, as in tests of the budgets alone)."""

    async def listed(self, number: str) -> bool:
        """Whether ``number`` is on the do-not-call list; ``StoreError`` when that cannot be told."""
        return self.dnc is not None and await self.dnc.contains(number)

    async def close(self) -> None:
        """Close the do-not-call list (the counters belong to whoever gave them)."""
        if self.dnc is not None:
            await self.dnc.close()

    def destination_refusal(self, number: str) -> Refusal | None:
        """None when ``number`` may be called or texted; else why not (no budget is taken)."""
        normal = e164(number)
        if not normal:
            return Refusal("not_e164", "I can only call or text a full international number, like +1 555 123 4567.")
        if any(normal.startswith(p) for p in self.settings.deny_prefixes):
            return Refusal("denied_prefix", "I'm sorry, I can't call or text that number.")
        if self.settings.allow_prefixes and not any(normal.startswith(p) for p in self.settings.allow_prefixes):
            return Refusal("not_allowed", "I'm sorry, I can't call or text that number.")
        return None

    async def authorize(self, kind: str, conversation_id: str, number: str) -> Refusal | None:
        """Check the destination and take one ``kind`` ("call" or "sms") from the budgets."""
        refusal = self.destination_refusal(number)
        if refusal is not None:
            log.warning("conversation %s: outbound %s refused (%s)", conversation_id, kind, refusal.reason)
            return refusal
        try:
            if await self.listed(number):
                refusal = Refusal("do_not_call", "That number asked us not to call or text it, so I won't.")
        except StoreError as exc:
            log.error("conversation %s: outbound %s refused: the do-not-call list cannot be read (%s)",
                      conversation_id, kind, exc)
            refusal = Refusal("dnc_unavailable", "I can't do that right now. Please try again shortly.")
        if refusal is not None:
            log.warning("conversation %s: outbound %s refused (%s)", conversation_id, kind, refusal.reason)
            return refusal
        cfg = self.settings
        per_conversation = cfg.calls_per_conversation_per_hour if kind == "call" else cfg.sms_per_conversation_per_hour
        per_minute = cfg.calls_per_minute if kind == "call" else cfg.sms_per_minute
        what = "calls" if kind == "call" else "messages"
        try:
            if not await self.counters.take(f"out:{kind}:conv:{conversation_id}", limit=per_conversation,
                                            window_seconds=3600):
                refusal = Refusal("conversation_limit", f"I've already sent as many {what} as I can for now. "
                                                        "Please try again later, or ask for an agent.")
            elif not await self.counters.take(f"out:{kind}:all", limit=per_minute, window_seconds=60):
                refusal = Refusal("gateway_limit", f"We're very busy right now and can't send {what} at the moment. "
                                                   "Please try again in a minute, or ask for an agent.")
        except StoreError as exc:
            log.error("conversation %s: outbound %s refused: limits cannot be checked (%s)", conversation_id, kind, exc)
            refusal = Refusal("limits_unavailable", "I can't do that right now. Please try again shortly.")
        if refusal is not None:
            log.warning("conversation %s: outbound %s refused (%s)", conversation_id, kind, refusal.reason)
        return refusal
