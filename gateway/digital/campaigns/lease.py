"""The runner lease: campaigns run on one node at a time.

Campaign state lives in the SQLite file of the data directory of the node that runs them
(:mod:`gateway.digital.campaigns.store`); the claim of a contact for an attempt is one
transaction in that file. What the lease adds is that only one runner works on it:

- SQLite backend: a row in the campaigns file (``voicegw serve`` twice on one data directory,
  or a second process started by mistake, waits);
- Redis backend: a key in the shared Redis (``{p}campaigns:runner``, set with an expiry and
  renewed on every tick by the holder only), so a second node with ``campaigns.enabled`` does not
  run campaigns beside the first. Give campaigns to one node: its data directory holds them,
  and the campaign API and ``voicegw campaign`` act on that node's file (another node's API
  answers 409 naming the holder).

A runner that stops renewing (a crash) loses the lease after ``campaigns.lease_seconds``; the
next holder first settles the attempts the earlier one left open (``Campaigns.recover``), so a
call placed just before a crash is never placed again.
"""

from __future__ import annotations

from typing import Protocol

from gateway.config import Settings
from gateway.context.store import StoreError
from gateway.digital.campaigns.store import CampaignStore

# KEYS[1] the lease; ARGV: node, milliseconds. Returns {held (1/0), the holder before}.
_HOLD = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, cur or ''}
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RunnerLease(Protocol):
    async def hold(self, node: str, now: float) -> tuple[bool, str]:
        """Take or renew the lease: (held, the node that held it before: '' when none)."""
        ...

    async def holder(self) -> str:
        """The node holding the lease now ('' when none)."""
        ...

    async def release(self, node: str) -> None:
        ...

    async def close(self) -> None:
        ...


class SqliteLease:
    """The lease in the campaigns file (times on the campaigns' clock)."""

    def __init__(self, store: CampaignStore, seconds: float) -> None:
        self._store = store
        self._seconds = seconds
        self._last = ""

    async def hold(self, node: str, now: float) -> tuple[bool, str]:
        held, before = await self._store.hold_lease(node, now, self._seconds)
        self._last = node if held else before
        return held, before

    async def holder(self) -> str:
        return self._last

    async def release(self, node: str) -> None:
        await self._store.release_lease(node)

    async def close(self) -> None:
        return None


class RedisLease:
    """The lease in the shared Redis (expiry on Redis's clock)."""

    def __init__(self, url: str, seconds: float, *, prefix: str = "voicegw:") -> None:
        from gateway.context.redis_store import connect, safe_url

        self._key = f"{prefix}campaigns:runner"
        self._ms = int(seconds * 1000)
        self._safe_url = safe_url(url)
        self._redis = connect(url)
        self._hold = self._redis.register_script(_HOLD)
        self._release = self._redis.register_script(_RELEASE)

    async def _call(self, doing: str, op: object) -> object:
        from redis.exceptions import RedisError

        try:
            return await op  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreError(f"campaign lease in Redis at {self._safe_url} failed while {doing}: {exc}") from exc

    async def hold(self, node: str, now: float) -> tuple[bool, str]:
        held, before = await self._call("taking it", self._hold(keys=[self._key], args=[node, self._ms]))  # type: ignore[misc]
        return bool(int(held)), str(before or "")

    async def holder(self) -> str:
        return str(await self._call("reading it", self._redis.get(self._key)) or "")

    async def release(self, node: str) -> None:
        await self._call("releasing it", self._release(keys=[self._key], args=[node]))

    async def close(self) -> None:
        await self._redis.aclose()


def open_lease(settings: Settings, store: CampaignStore) -> RunnerLease:
    """The lease for the configured backend."""
    seconds = settings.campaigns.lease_seconds
    if settings.context.backend == "redis":
        return RedisLease(settings.context.redis_url, seconds)
    return SqliteLease(store, seconds)
