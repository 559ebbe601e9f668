"""The shared store as a node uses it: Redis, and the node's own conversations through an outage.

:class:`BufferedStore` is the :class:`~gateway.context.store.ContextStore` of ``voicegw serve``
on ``context.backend: redis``. While Redis answers, it is the Redis store, and it keeps a copy of
what the node reads and writes (:mod:`gateway.context.node_cache`). When Redis stops answering
(refused, reset, loading, or slower than ``context.outage_timeout_ms``):

- **calls and chats in progress go on**: their records are read from the node's copy, their
  events and saves are written to the node's spool (:mod:`gateway.context.spool`, committed to
  disk before the turn goes on) with the seq they will have;
- **a new conversation starts** (a caller is answered; its journey runs) but cannot resume an
  older one the node does not hold: during an outage a node knows only its own conversations;
- a record save checks the version against the node's copy, as Redis would; the node is the only
  writer of its calls' conversations (the core serializes each conversation's turns);
- every ``outage_probe_seconds`` the node pings Redis; once it answers, the spool is replayed,
  oldest first, and only then do writes go to Redis directly again. Each replayed write is
  idempotent: an event carries a uid that the append script looks for after the seq the node
  knew (an attempt that reached Redis before the outage was noticed is not written twice); a
  save is written only over the version it was made from; a create only if absent. So a replay
  cut anywhere (Redis gone again, the node killed) is run again from where it stood, and each
  write lands once, in the node's order, which is each conversation's seq order.
- a save made during the outage that meets another node's save of the same conversation (a
  network split, not an outage) is not written: the stored record stays as every other node saw
  it, the node's events are all in the log, and the conflict is logged and counted.

Everything beyond one conversation (scans, the feed, retention, erasure) goes to Redis only and
fails with :class:`~gateway.context.store.StoreUnavailable` during an outage; erasure also waits
until this node's spool is empty (a replay must not bring erased events back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, Iterable, TypeVar

from gateway.context.lifecycle import MAX_SCAN, Cutoffs, FeedEntry, PurgeCounts
from gateway.context.node_cache import NodeCache
from gateway.context.redis_store import RedisStore
from gateway.context.spool import Spool, SpooledOp
from gateway.context.store import (
    ConversationRecord,
    LoggedEvent,
    StoreError,
    StoreUnavailable,
    concurrent_update,
    event_payload,
    load_record,
    new_id,
    new_record,
    record_to_json,
    saved_copy,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

REPLAY_BATCH = 200
"""Spooled writes read, replayed and then removed together (a cut replay repeats at most these)."""


@dataclass
class OutageStats:
    """What the node did about Redis outages since it started (``/metrics``, tests)."""

    outages: int = 0
    spooled: int = 0
    replayed: int = 0
    already_there: int = 0
    """Replayed writes Redis already held (their first attempt got through unanswered)."""
    conflicts: int = 0
    dropped: int = 0
    """Replayed writes of conversations Redis no longer holds (erased meanwhile)."""


class _Away(Exception):
    """Redis is not to be used now: take the node's own path."""


class BufferedStore:
    """:class:`~gateway.context.store.ContextStore` over Redis that rides out outages (see above)."""

    def __init__(self, redis: RedisStore, spool: Spool, *, timeout_seconds: float, probe_seconds: float,
                 cache_conversations: int, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.spool = spool
        self.timeout = timeout_seconds
        self.probe_seconds = probe_seconds
        self.clock = clock
        self.cache = NodeCache(cache_conversations)
        self.stats = OutageStats()
        self._waiting = len(spool)  # writes in the spool (or being committed to it), not yet in Redis
        self.up = self._waiting == 0
        """True: writes go to Redis. False: to the spool, until Redis answers and the spool is empty."""
        self._drainer: asyncio.Task[None] | None = None
        self._since = 0.0
        if not self.up:
            log.warning("outage spool %s holds %d writes from an earlier run; they go to Redis first",
                        spool.path, self._waiting)
            self._since = time.monotonic()
            self._recover()
            try:
                self._start_drainer()
            except RuntimeError:  # no event loop yet: the first operation starts the replay
                pass

    # -- the outage itself -----------------------------------------------------------

    def _recover(self) -> None:
        """After a restart with a non-empty spool: the node's copy of the conversations in it."""
        for op in self.spool.oldest_now(self.spool.max_ops):
            if op.kind in ("create", "save"):
                self.cache.put(load_record(op.data["record"], f"outage spool {self.spool.path}"))
            elif op.conversation_id in self.cache:
                self.cache.logged(_spooled_event(op))
            self.cache.waiting(op.conversation_id, 1)

    def _went_away(self, doing: str, exc: BaseException) -> None:
        if self.up:
            self.up = False
            self._since = time.monotonic()
            self.stats.outages += 1
            log.error("Redis context store unavailable while %s (%s): conversations on this node go on, "
                      "their writes wait in %s until Redis answers", doing, str(exc) or type(exc).__name__,
                      self.spool.path)
        self._start_drainer()

    def _start_drainer(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain_when_back(), name="spool-replay")

    async def _redis(self, doing: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis operation while Redis is in use; a failure to reach it starts an outage."""
        if not self.up:
            self._start_drainer()
            raise _Away
        try:
            return await asyncio.wait_for(make(), self.timeout)
        except (StoreUnavailable, TimeoutError) as exc:
            self._went_away(doing, exc)
            raise _Away from exc

    async def _spool(self, op: SpooledOp) -> None:
        self._waiting += 1
        self.cache.waiting(op.conversation_id, 1)
        try:
            await self.spool.add(op)
        except BaseException:
            self._waiting -= 1
            self.cache.waiting(op.conversation_id, -1)
            raise
        self.stats.spooled += 1

    async def _drain_when_back(self) -> None:
        while not self.up:
            try:
                await asyncio.wait_for(self.redis.ping(), self.timeout)
                await self._replay_all()
            except (StoreUnavailable, TimeoutError) as exc:
                log.debug("Redis still away: %s", exc)
            except StoreError as exc:  # the spool file itself: say so, keep trying
                log.error("outage spool replay failed: %s", exc)
            if not self.up:
                await asyncio.sleep(self.probe_seconds)

    async def _replay_all(self) -> None:
        started, replayed = time.monotonic(), self.stats.replayed
        while True:
            batch = await self.spool.oldest(REPLAY_BATCH)
            if not batch:
                if self._waiting > 0:  # a write is being committed to the spool: replay it too
                    await asyncio.sleep(0.01)
                    continue
                self.up = True  # nothing waits (checked without yielding): Redis again from here on
                log.warning("Redis context store back after %.1f s: %d writes replayed in %.2f s "
                            "(%d were already there, %d conflicts, %d dropped)",
                            time.monotonic() - self._since, self.stats.replayed - replayed,
                            time.monotonic() - started, self.stats.already_there, self.stats.conflicts,
                            self.stats.dropped)
                return
            for op in batch:
                await asyncio.wait_for(self._replay(op), self.timeout)
            await self.spool.remove_through(batch[-1].position)
            self._waiting -= len(batch)
            for op in batch:
                self.cache.waiting(op.conversation_id, -1)

    async def _replay(self, op: SpooledOp) -> None:
        data, cid = op.data, op.conversation_id
        try:
            if op.kind == "create":
                await self.redis.put_new(load_record(data["record"], "outage spool"))
            elif op.kind == "save":
                base = load_record(data["base"], "outage spool") if data.get("base") else None
                record = load_record(data["record"], "outage spool")
                done = await self.redis.replay_save(record, data["record"], base)
                if done == 0:
                    self.stats.already_there += 1
                elif done == -1:
                    self.stats.conflicts += 1
                    log.error("conversation %s: saved by another node while this one could not reach Redis; "
                              "the stored record is kept, this node's version %d (step %r) is not written "
                              "(its events are in the log)", cid, record.version, record.step)
                elif done == -2:
                    self.stats.dropped += 1
                    log.warning("conversation %s is no longer stored (erased?): a save from the outage dropped", cid)
            else:
                event = _spooled_event(op)
                logged, fresh = await self.redis.append_clean(
                    cid, at=event.at, channel=event.channel, kind=event.kind, clean=event.payload,
                    payload_text=data["payload_text"], uid=data["uid"], after_seq=max(event.seq - 1, 0))
                if not fresh:
                    self.stats.already_there += 1
                elif logged.seq != event.seq:
                    log.info("conversation %s: %s written as seq %d (the node had %d: another node wrote meanwhile)",
                             cid, event.kind, logged.seq, event.seq)
        except StoreUnavailable:
            raise
        except StoreError as exc:  # not stored any more (an append after an erasure)
            self.stats.dropped += 1
            log.warning("conversation %s: a %s from the outage dropped: %s", cid, op.kind, exc)
            return
        self.stats.replayed += 1

    # -- the ContextStore protocol ---------------------------------------------------

    async def create(self, *, caller_id: str = "", customer_id: str = "", channel: str = "") -> ConversationRecord:
        record = new_record(caller_id=caller_id, customer_id=customer_id, channel=channel, now=self.clock())
        try:
            await self._redis("creating a conversation", lambda: self.redis.put_new(record))
            self.cache.put(record, 0)
        except _Away:
            self.cache.put(record, 0)
            await self._spool(SpooledOp(record.id, "create", {"record": record_to_json(record, self.redis.redactor)}))
        return record

    async def get(self, conversation_id: str) -> ConversationRecord | None:
        try:
            record, seq = await self._redis("reading a conversation", lambda: self.redis.snapshot(conversation_id))
        except _Away:
            known = self.cache.record(conversation_id)
            if known is None:
                log.warning("conversation %s: not held by this node while Redis is away", conversation_id)
            return known
        if record is not None:
            self.cache.put(record, seq)
        return record

    async def save(self, record: ConversationRecord) -> None:
        at = self.clock()  # the same text either way: a save that reached Redis unanswered is seen as such
        try:
            await self._redis("saving a conversation", lambda: self.redis.save(record, at=at))
            self.cache.put(record)
            return
        except _Away:
            pass
        known = self.cache.version(record.id)
        if known is None:
            raise StoreUnavailable(f"conversation {record.id} cannot be saved: Redis is away and this node "
                                   "does not hold it")
        if known != record.version:
            raise concurrent_update(record.id, known, record.version)
        base = self.cache.record(record.id)
        stored = saved_copy(record, at)
        text = record_to_json(stored, self.redis.redactor)
        self.cache.put(stored)
        await self._spool(SpooledOp(record.id, "save", {
            "record": text, "base": record_to_json(base, self.redis.redactor) if base is not None else ""}))
        record.version, record.updated_at = stored.version, stored.updated_at

    async def find_recent(self, *, customer_id: str = "", caller_id: str = "",
                          within_seconds: float) -> ConversationRecord | None:
        try:
            return await self._redis("looking up a recent conversation", lambda: self.redis.find_recent(
                customer_id=customer_id, caller_id=caller_id, within_seconds=within_seconds))
        except _Away:
            return self.cache.find_recent(customer_id=customer_id, caller_id=caller_id,
                                          since=self.clock() - within_seconds)

    async def append(self, conversation_id: str, *, channel: str, kind: str, payload: dict[str, Any],
                     sensitive: Iterable[str] = ()) -> LoggedEvent:
        clean, payload_text = event_payload(self.redis.redactor, conversation_id, payload, sensitive)
        uid, at = new_id(), self.clock()
        try:
            logged, _ = await self._redis("appending to the event log", lambda: self.redis.append_clean(
                conversation_id, at=at, channel=channel, kind=kind, clean=clean, payload_text=payload_text, uid=uid))
            self.cache.logged(logged)
            return logged
        except _Away:
            pass
        if conversation_id not in self.cache:
            raise StoreUnavailable(f"cannot log an event of conversation {conversation_id}: Redis is away and "
                                   "this node does not hold it")
        logged = LoggedEvent(seq=self.cache.next_seq(conversation_id), conversation_id=conversation_id, at=at,
                             channel=channel, kind=kind, payload=clean)
        self.cache.logged(logged)  # the seq is taken at once: the next append gets the next one
        await self._spool(SpooledOp(conversation_id, "append", {
            "uid": uid, "seq": logged.seq, "at": at, "channel": channel, "kind": kind, "payload": clean,
            "payload_text": payload_text}))
        return logged

    async def events(self, conversation_id: str, *, limit: int | None = None) -> list[LoggedEvent]:
        try:
            events = await self._redis("reading the event log",
                                       lambda: self.redis.events(conversation_id, limit=limit))
        except _Away:
            return self.cache.tail(conversation_id, limit)
        if limit is None:
            self.cache.set_tail(conversation_id, events)
        return events

    async def recent(self, limit: int = 50) -> list[ConversationRecord]:
        try:
            return await self._redis("listing recent conversations", lambda: self.redis.recent(limit))
        except _Away:
            return self.cache.recent(limit)

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        if self._waiting:
            log.warning("stopping with %d writes in the outage spool %s: they go to Redis when this node "
                        "starts again", self._waiting, self.spool.path)
        self.spool.close()
        await self.redis.close()

    # -- the rest goes to Redis only ---------------------------------------------------

    async def conversations_between(self, since: float, until: float, *,
                                    limit: int = MAX_SCAN) -> list[ConversationRecord]:
        return await self.redis.conversations_between(since, until, limit=limit)

    async def conversation_ids(self, *, customer_id: str = "", caller_ids: Iterable[str] = ()) -> list[str]:
        return await self.redis.conversation_ids(customer_id=customer_id, caller_ids=caller_ids)

    async def feed(self, after: str = "", *, limit: int = 100) -> list[FeedEntry]:
        return await self.redis.feed(after, limit=limit)

    async def feed_head(self) -> str:
        return await self.redis.feed_head()

    async def erase_conversations(self, ids: Iterable[str], *, actor: str, reason: str) -> PurgeCounts:
        if self._waiting:
            raise StoreUnavailable(f"erasure waits: this node still holds {self._waiting} writes of the last "
                                   "Redis outage (they would bring erased events back); try again in a moment")
        return await self.redis.erase_conversations(ids, actor=actor, reason=reason)

    async def expire(self, cutoffs: Cutoffs, *, actor: str) -> PurgeCounts:
        return await self.redis.expire(cutoffs, actor=actor)

    async def ping(self) -> None:
        await self.redis.ping()

    def health(self) -> dict[str, Any]:
        """Whether Redis is in use, and what waits for it."""
        return {"redis_up": self.up, "spooled_waiting": self._waiting, **asdict(self.stats)}

    def register_metrics(self, metrics: Any) -> None:
        """Gauges on ``/metrics``: Redis in use, the spool, outages and their replays."""
        metrics.gauge("voicegw_context_redis_up", lambda: float(self.up))
        metrics.gauge("voicegw_context_spool_waiting", lambda: float(self._waiting))
        metrics.gauge("voicegw_context_outages_total", lambda: float(self.stats.outages))
        metrics.gauge("voicegw_context_replayed_total", lambda: float(self.stats.replayed))
        metrics.gauge("voicegw_context_replay_conflicts_total", lambda: float(self.stats.conflicts))


def _spooled_event(op: SpooledOp) -> LoggedEvent:
    d = op.data
    return LoggedEvent(seq=int(d["seq"]), conversation_id=op.conversation_id, at=float(d["at"]),
                       channel=str(d["channel"]), kind=str(d["kind"]), payload=dict(d["payload"]))
