"""Abuse limits, sans-IO: token buckets per key, and caps on the sessions a server holds.

:class:`TokenBuckets` gives each key (a conversation, a client address) a bucket of
``capacity`` tokens refilled at ``per_minute / 60`` a second; each event takes one token. A
key may spend a burst at once and then keeps the steady rate; a key that floods empties only
its own bucket. A full bucket carries no information, so full buckets are forgotten and memory
is bounded by the keys active recently (and by ``max_keys`` whatever happens).

:class:`SessionCap` counts the sessions one server holds and refuses the one past its limit (a
voice server's cap sits within the node's, ``voice.max_calls``, which every voice server shares);
:class:`KeyedCap` does the same per key (open chats per client address). Refusals are
counted, and reported as ``voicegw_sessions_refused_total{server=...}`` once
:meth:`SessionCap.register_metrics` has attached the gateway's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

MAX_KEYS = 10_000
"""Buckets kept at most. Past it, full buckets are dropped, then the oldest: a dropped key
starts again with a full bucket, which favours that key, so the bound is set well above the
number of clients one node serves in a minute."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """One token bucket per key: ``capacity`` tokens (default: a minute's worth), refilled at
    ``per_minute`` a minute."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float], capacity: float | None = None,
                 max_keys: int = MAX_KEYS) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_minute = per_minute
        self.capacity = float(capacity if capacity is not None else per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def _level(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.capacity
        return min(self.capacity, bucket.tokens + (now - bucket.stamp) * self._rate)

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0.0 when it has one now)."""
        level = self._level(key, self._clock())
        return 0.0 if level >= 1.0 else (1.0 - level) / self._rate

    def take(self, key: str) -> bool:
        """Take one token for ``key``; False (nothing taken) when its bucket is empty."""
        now = self._clock()
        level = self._level(key, now)
        if level < 1.0:
            return False
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._evict(now)
            self._buckets[key] = _Bucket(level - 1.0, now)
        else:
            bucket.tokens, bucket.stamp = level - 1.0, now
        return True

    def empty(self, key: str) -> None:
        """Spend every token of ``key`` now: from here it earns them back at the steady rate."""
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._evict(self._clock())
        self._buckets[key] = _Bucket(0.0, self._clock())

    def __len__(self) -> int:
        return len(self._buckets)

    def _evict(self, now: float) -> None:
        for key in [k for k in self._buckets if self._level(k, now) >= self.capacity]:
            del self._buckets[key]
        while len(self._buckets) >= self._max_keys:
            del self._buckets[next(iter(self._buckets))]


class SessionCap:
    """At most ``limit`` sessions at once on one server (``server`` names it in logs and metrics).

    ``admit()`` takes a slot (True) or counts a refusal (False); every admitted session calls
    ``release()`` once when it ends. A cap ``within`` another (a voice server's inside the node's
    ``voice.max_calls``) takes a slot of both: the refusal is counted on the cap that was full,
    and ``refused_by`` names its setting for the log line.
    """

    def __init__(self, server: str, limit: int, *, setting: str = "", within: "SessionCap | None" = None) -> None:
        if limit < 1:
            raise ValueError("a session cap must allow at least one session")
        self.server = server
        self.limit = limit
        self.setting = setting or f"{server}.max_sessions"
        self.within = within
        self.active = 0
        self.refused = 0
        self.refused_by = ""  # the setting of the cap that refused last
        self._metrics: Any = None

    @property
    def full(self) -> bool:
        """No slot free here or in the cap this one is within (nothing counted)."""
        return self.active >= self.limit or (self.within is not None and self.within.full)

    def admit(self) -> bool:
        """Take a slot; when none is free, count the refusal and return False."""
        if self.active >= self.limit:
            self._refuse()
            self.refused_by = self.setting
            return False
        if self.within is not None and not self.within.admit():
            self.refused_by = self.within.refused_by
            return False
        self.active += 1
        return True

    def _refuse(self) -> None:
        self.refused += 1
        if self._metrics is not None:
            self._metrics.inc("voicegw_sessions_refused_total", server=self.server)

    def refusal(self) -> str:
        """The last refusal for a log line: "24 calls in progress (voice.max_calls)"."""
        cap: SessionCap | None = self
        while cap is not None and cap.setting != self.refused_by:
            cap = cap.within
        cap = cap or self
        return f"{cap.active} calls in progress ({cap.setting})"

    def release(self) -> None:
        """Give back the slot of a session that ended."""
        if self.active > 0:
            self.active -= 1
            if self.within is not None:
                self.within.release()

    def register_metrics(self, metrics: Any) -> None:
        """Report refusals on ``/metrics`` (those counted so far included)."""
        self._metrics = metrics
        metrics.inc("voicegw_sessions_refused_total", float(self.refused), server=self.server)


class KeyedCap:
    """At most ``limit`` sessions at once per key (e.g. open chats per client address)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a session cap must allow at least one session")
        self.limit = limit
        self._active: dict[str, int] = {}

    def count(self, key: str) -> int:
        return self._active.get(key, 0)

    def admit(self, key: str) -> bool:
        """Take a slot for ``key`` (False when it holds ``limit`` already)."""
        held = self._active.get(key, 0)
        if held >= self.limit:
            return False
        self._active[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self._active.get(key, 0) - 1
        if held > 0:
            self._active[key] = held
        else:
            self._active.pop(key, None)
