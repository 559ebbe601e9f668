"""Slowing down token guessers without locking the honest agent out for long.

Sans-IO, with an injected clock. Two counters of failed sign-ins, both over a sliding window
(``agents.signin_address_window_seconds``):

- **per client address** (an IPv6 address counts by its /64, what one host usually holds):
  after ``signin_failures_per_address`` failures in the window the address is refused until its
  oldest failure leaves the window. A guesser gets 20 tries per 10 minutes by default; everyone
  else is untouched. A success does not wipe the count (an insider signing in as themselves
  between guesses gains nothing), it only stops adding to it.
- **per account** (the account a token names): after ``signin_failures_per_account`` failures
  in the window from any addresses (50: more than one address may make), sign-in to that
  account pauses for ``signin_account_pause_seconds`` (a minute by default), even with the right
  token, so a guesser spread over many addresses learns nothing and the real agent waits one
  minute at most.

Counters are per gateway node (in memory), bounded to :data:`MAX_TRACKED` keys each; behind a
proxy the address is the proxy's unless the web server resolves the forwarded address.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

from gateway.config import AgentSettings

MAX_TRACKED = 10_000
"""Addresses (and accounts) remembered at most; the least recently seen are forgotten first."""


@dataclass(frozen=True)
class ThrottleLimits:
    per_address: int = 20
    window_seconds: float = 600.0
    per_account: int = 50
    account_pause_seconds: float = 60.0

    @classmethod
    def from_settings(cls, agents: AgentSettings) -> "ThrottleLimits":
        return cls(agents.signin_failures_per_address, agents.signin_address_window_seconds,
                   agents.signin_failures_per_account, agents.signin_account_pause_seconds)


@dataclass(frozen=True)
class Verdict:
    """Whether a sign-in attempt may be checked at all; ``retry_after`` seconds otherwise."""

    allowed: bool
    retry_after: float = 0.0
    why: str = ""


def address_key(address: str) -> str:
    """What failures are counted under: the address, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SignInThrottle:
    """Counts failed sign-ins per address and per account."""

    def __init__(self, limits: ThrottleLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._by_address: OrderedDict[str, deque[float]] = OrderedDict()
        self._by_account: OrderedDict[str, deque[float]] = OrderedDict()
        self._paused_until: OrderedDict[str, float] = OrderedDict()

    def _recent(self, table: OrderedDict[str, deque[float]], key: str, now: float) -> deque[float]:
        times = table.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.limits.window_seconds:
            times.popleft()
        return times

    def check(self, address: str, account: str = "") -> Verdict:
        """May an attempt from ``address`` (naming ``account``) be checked now?"""
        now = self._clock()
        times = self._recent(self._by_address, address_key(address), now)
        if len(times) >= self.limits.per_address:
            return Verdict(False, times[0] + self.limits.window_seconds - now, "address")
        until = self._paused_until.get(account, 0.0) if account else 0.0
        if until > now:
            return Verdict(False, until - now, "account")
        return Verdict(True)

    def failed(self, address: str, account: str = "") -> Verdict:
        """Record a failure; the verdict says whether this one closed the address or account."""
        now = self._clock()
        self._push(self._by_address, address_key(address), now)
        if account:
            times = self._push(self._by_account, account, now)
            if len(times) >= self.limits.per_account:
                times.clear()
                self._paused_until[account] = now + self.limits.account_pause_seconds
                self._paused_until.move_to_end(account)
                while len(self._paused_until) > MAX_TRACKED:
                    self._paused_until.popitem(last=False)
        return self.check(address, account)

    def _push(self, table: OrderedDict[str, deque[float]], key: str, now: float) -> deque[float]:
        times = self._recent(table, key, now)
        times.append(now)
        table[key] = times
        table.move_to_end(key)
        while len(table) > MAX_TRACKED:
            table.popitem(last=False)
        return times
