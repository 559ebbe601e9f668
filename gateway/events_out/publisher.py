"""Every conversation event to every configured webhook: signed, in order, retried, never lost.

One delivery loop per webhook reads the store's feed after the webhook's cursor and POSTs each
event (the envelope of :mod:`gateway.events_out.schema`, HMAC-signed). The cursor moves only
past events the receiver acknowledged (any 2xx) or that went to the dead-letter store, so a
receiver that is down gets everything once it is back, in order (at least once: a receiver
dedupes on the event ``id``).

- A refused connection, a timeout, a 5xx, 408 or 429: the same event is tried again after
  ``backoff_base_seconds``, doubling up to ``backoff_max_seconds``; after ``max_attempts`` it
  goes to the dead-letter store and delivery goes on with the next event.
- Any other 4xx: the receiver rejects that event; it goes to the dead-letter store at once.
- With several nodes (Redis) one node at a time holds a webhook's lease and delivers for it.

``clock`` and ``sleep`` are injectable, so tests drive an hour of outage without waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp

from gateway.config import EventsOutSettings, WebhookSettings
from gateway.context.lifecycle import FeedEntry, LifecycleStore
from gateway.context.store import StoreError
from gateway.events_out.deliveries import Deliveries
from gateway.events_out.schema import (EVENT_ID_HEADER, POSITION_HEADER, SIGNATURE_HEADER, body_of, envelope,
                                       sign)

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
"""A node that stops renewing its lease (crashed) hands the webhook over after this long."""
STORE_RETRY_SECONDS = 5.0
"""When the store or the delivery state cannot be read, the loop waits this long and tries again."""
RETRY_STATUSES = frozenset({408, 425, 429})
MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class Attempt:
    ok: bool
    retry: bool
    error: str


class WebhookPublisher:
    """The delivery loops of every webhook in ``settings.webhooks``."""

    def __init__(self, settings: EventsOutSettings, store: LifecycleStore, deliveries: Deliveries, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.settings = settings
        self.store = store
        self.deliveries = deliveries
        self.clock = clock
        self.sleep = sleep
        self.node = secrets.token_hex(8)
        self.delivered = 0
        self.dead = 0
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._session()
        for hook in self.settings.webhooks:
            self._tasks.append(asyncio.create_task(self._loop(hook), name=f"webhook-{hook.name}"))
        log.info("events out: %d webhook(s) from the feed", len(self._tasks))

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
                                               headers={"User-Agent": "voicegw-events/1"})
        return self._http

    async def _wait(self, seconds: float) -> None:
        """``sleep(seconds)``, cut short by :meth:`close` (a loop stops between two operations,
        never inside a store or Redis call)."""
        if self._stopping.is_set():
            return
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for future in (sleeping, stopping):
            future.cancel()

    async def close(self) -> None:
        """Stop the loops where they stand (an event being posted is finished or times out)."""
        self._stopping.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=self.settings.timeout_seconds + 1.0)
            for task in pending:
                task.cancel()
            for task in self._tasks:
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # shutting down: nothing left to report
                    pass
            for hook in self.settings.webhooks:
                try:
                    await self.deliveries.release(hook.name, self.node)
                except StoreError as exc:  # the lease then runs out by itself
                    log.warning("webhook %s: lease not released: %s", hook.name, exc)
        self._tasks = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _loop(self, hook: WebhookSettings) -> None:
        while not self._stopping.is_set():
            try:
                if await self.deliveries.lease(hook.name, self.node, LEASE_SECONDS):
                    if await self.deliver_pending(hook):
                        continue
                await self._wait(self.settings.poll_seconds)
            except StoreError as exc:
                log.error("webhook %s: delivery paused: %s", hook.name, exc)
                await self._wait(STORE_RETRY_SECONDS)

    async def deliver_pending(self, hook: WebhookSettings) -> int:
        """One batch after the cursor; how many feed entries it went past (0: nothing new)."""
        cursor = await self.deliveries.cursor(hook.name)
        entries = await self.store.feed(cursor, limit=self.settings.batch)
        for entry in entries:
            if self._stopping.is_set():
                return 0
            if not hook.kinds or entry.event.kind in hook.kinds:
                if not await self._deliver(hook, entry):
                    return 0  # the lease went to another node meanwhile
            await self.deliveries.advance(hook.name, entry.position)
        return len(entries)

    async def _deliver(self, hook: WebhookSettings, entry: FeedEntry) -> bool:
        data = envelope(entry.position, entry.event)
        body = body_of(data)
        cfg = self.settings
        for attempt in range(1, cfg.max_attempts + 1):
            result = await self._post(hook, entry, body)
            if result.ok:
                self.delivered += 1
                return True
            if not result.retry or attempt == cfg.max_attempts:
                log.error("webhook %s: event %s (conversation %s) to the dead-letter store after %d attempt(s): %s",
                          hook.name, data["id"], entry.event.conversation_id, attempt, result.error)
                await self.deliveries.dead_letter(hook.name, entry.position, data, attempt, result.error)
                self.dead += 1
                return True
            wait = min(cfg.backoff_max_seconds, cfg.backoff_base_seconds * 2 ** (attempt - 1))
            log.warning("webhook %s: event %s not delivered (%s); attempt %d of %d in %.0f s", hook.name, data["id"],
                        result.error, attempt + 1, cfg.max_attempts, wait)
            await self._wait(wait)
            if self._stopping.is_set() or not await self.deliveries.lease(hook.name, self.node, LEASE_SECONDS):
                return False
        return True

    async def _post(self, hook: WebhookSettings, entry: FeedEntry, body: bytes) -> Attempt:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(hook.secret, self.clock(), body),
                   EVENT_ID_HEADER: f"{entry.event.conversation_id}:{entry.event.seq}",
                   POSITION_HEADER: entry.position}
        try:
            async with self._session().post(hook.url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return Attempt(True, False, "")
                retry = resp.status >= 500 or resp.status in RETRY_STATUSES
                return Attempt(False, retry, f"HTTP {resp.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return Attempt(False, True, (f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS])

    async def status(self) -> list[dict[str, Any]]:
        """Each webhook's cursor against the feed's newest position (for ``voicegw events``)."""
        head = await self.store.feed_head()
        return [{"webhook": h.name, "url": h.url, "cursor": await self.deliveries.cursor(h.name), "head": head}
                for h in self.settings.webhooks]
