"""The shared context store: conversations in Redis, for several gateway nodes.

Layout (``{p}`` is the key prefix, ``voicegw:`` by default):

- ``{p}conv:{id}``          the record as JSON; ``save()`` checks the version under WATCH/MULTI
- ``{p}events:{id}``        the event log, a list of JSON entries (redacted before RPUSH)
- ``{p}seq:{id}``           the log's sequence counter
- ``{p}customer:{cid}``     sorted set of conversation ids scored by ``updated_at``
- ``{p}caller:{number}``    same, by caller id
- ``{p}recent``             all conversations scored by ``updated_at`` (dashboards)
- ``{p}feed``               every event in one global order, a Redis Stream (``feed_max_len``
                            entries at most; 0 = no stream), read by the webhook publisher and by
                            consumer groups (:mod:`gateway.context.redis_lifecycle`)
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable, Iterable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config import RedactionSettings
from gateway.context import redis_lifecycle as lifecycle
from gateway.context.lifecycle import MAX_FEED_BATCH, MAX_SCAN, Cutoffs, FeedEntry, PurgeCounts
from gateway.context.redaction import Redactor
from gateway.context.store import (
    ConcurrentUpdate,
    ConversationRecord,
    LoggedEvent,
    StoreError,
    StoreUnavailable,
    concurrent_update,
    dumps,
    event_payload,
    load_record,
    new_id,
    new_record,
    not_stored,
    record_to_json,
    saved_copy,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PREFIX = "voicegw:"
SOCKET_TIMEOUT_SECONDS = 5.0  # one Redis command never waits longer than this
_RECENT_SCAN = 20  # index entries examined per lookup (closed ones are skipped)

# Increment the sequence and push the entry atomically, so list order equals seq order.
# ARGV[1] is the entry's JSON object without "seq"; the script splices the number in.
# With ARGV[2] > 0 the same step adds the event to the feed stream KEYS[4] (trimmed to about
# that many entries): ARGV[3..7] are its conversation id, time, channel, kind and payload JSON.
# ARGV[8] is the entry's uid (inside its JSON as "uid"). A replayed entry (a node's outage spool,
# :mod:`gateway.context.outage`) passes ARGV[9] >= 0, the last seq that node knew: when an entry
# after it already holds the uid (the first attempt reached Redis though its answer never came
# back), that entry's seq is returned and nothing is added, so a replay applies each event once.
# Returns {seq, 1} when added, {seq, 0} when the uid was already there, {-1, 0} when the
# conversation is not stored.
_APPEND_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local after = tonumber(ARGV[9])
if ARGV[8] ~= '' and after >= 0 then
  local needle = '"uid":"' .. ARGV[8] .. '"'
  for i, item in ipairs(redis.call('LRANGE', KEYS[3], after, -1)) do
    if string.find(item, needle, 1, true) then return {after + i, 0} end
  end
end
local seq = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[3], '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2))
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'conversation_id', ARGV[3], 'seq', seq,
             'at', ARGV[4], 'channel', ARGV[5], 'kind', ARGV[6], 'payload', ARGV[7])
end
return {seq, 1}
"""

# A node's save replayed from its outage spool: ARGV[1] is the record at version ARGV[2]. It is
# written when the stored record is one version behind (nobody else saved meanwhile); 0 when
# the stored record already is this very text (applied before); -1 when someone else's version
# is there (the stored record is kept); -2 when the conversation is not stored.
_REPLAY_SAVE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if not current then return -2 end
local stored = tonumber(cjson.decode(current)['version'])
local version = tonumber(ARGV[2])
if stored == version - 1 then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
if stored == version and current == ARGV[1] then return 0 end
return -1
"""

def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def connect(url: str) -> aioredis.Redis:
    """An asyncio Redis client with bounded waits and a short retry (connects lazily)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        decode_responses=True,
    )


class RedisStore:
    """:class:`~gateway.context.store.ContextStore` on Redis."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        redaction: RedactionSettings | None = None,
        clock: Callable[[], float] = time.time,
        feed_max_len: int = 0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.feed_max_len = max(0, int(feed_max_len))
        self.redactor = Redactor(redaction)
        self.clock = clock
        self._redis = connect(url)
        self._append = self._redis.register_script(_APPEND_SCRIPT)
        self._replay_save = self._redis.register_script(_REPLAY_SAVE_SCRIPT)

    # -- keys and errors ---------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _index_keys(self, record: ConversationRecord) -> list[str]:
        keys = []
        if record.customer_id:
            keys.append(self._key("customer", record.customer_id))
        if record.caller_id:
            keys.append(self._key("caller", record.caller_id))
        return keys

    async def _call(self, doing: str, op: Awaitable[T]) -> T:
        try:
            return await op
        except (StoreError, WatchError):
            raise
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError) as exc:
            # refused, reset, timed out, loading its dataset, a replica: the store is away
            raise StoreUnavailable(
                f"Redis context store at {safe_url(self.url)} unavailable while {doing}: {exc}. "
                "Check that redis-server runs and context.redis_url points at it") from exc
        except RedisError as exc:
            raise StoreError(
                f"Redis context store at {safe_url(self.url)} failed while {doing}: {exc}. "
                "Check that redis-server runs and context.redis_url points at it"
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(
                f"Redis context store at {safe_url(self.url)} unreachable while {doing}: {exc}. "
                "Check that redis-server runs and context.redis_url points at it") from exc

    def _load(self, text: str) -> ConversationRecord:
        return load_record(text, "Redis context store")

    # -- the ContextStore protocol -----------------------------------------------------

    async def create(
        self, *, caller_id: str = "", customer_id: str = "", channel: str = ""
    ) -> ConversationRecord:
        record = new_record(caller_id=caller_id, customer_id=customer_id, channel=channel, now=self.clock())
        await self.put_new(record)
        return record

    async def put_new(self, record: ConversationRecord) -> None:
        """Store a record made elsewhere (``create``, or a node's outage spool) unless a record
        with its id is already stored: a replay creates once."""
        text = record_to_json(record, self.redactor)

        async def op() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(self._key("conv", record.id), text, nx=True)
            for key in self._index_keys(record) + [self._key("recent")]:
                pipe.zadd(key, {record.id: record.updated_at}, nx=True)
            await pipe.execute()

        await self._call("creating a conversation", op())

    async def get(self, conversation_id: str) -> ConversationRecord | None:
        text = await self._call("reading a conversation", self._redis.get(self._key("conv", conversation_id)))
        return self._load(text) if text is not None else None

    async def snapshot(self, conversation_id: str) -> tuple[ConversationRecord | None, int]:
        """The stored record and the last seq of its log, read together (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._key("conv", conversation_id))
        pipe.get(self._key("seq", conversation_id))
        text, seq = await self._call("reading a conversation", pipe.execute())
        return (self._load(text) if text is not None else None), int(seq or 0)

    async def save(self, record: ConversationRecord, *, at: float | None = None) -> None:
        """See :meth:`ContextStore.save`; ``at`` is the update time (the clock's by default)."""
        expected = record.version
        stored = saved_copy(record, self.clock() if at is None else at)
        updated_at = stored.updated_at
        text = record_to_json(stored, self.redactor)
        key = self._key("conv", record.id)

        async def op() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                current = await pipe.get(key)
                if current is None:
                    raise not_stored(record.id)
                old = self._load(current)
                if old.version != expected:
                    raise concurrent_update(record.id, old.version, expected)
                pipe.multi()
                pipe.set(key, text)
                for stale in set(self._index_keys(old)) - set(self._index_keys(stored)):
                    pipe.zrem(stale, record.id)
                for index in self._index_keys(stored) + [self._key("recent")]:
                    pipe.zadd(index, {record.id: updated_at})
                await pipe.execute()

        try:
            await self._call("saving a conversation", op())
        except WatchError as exc:
            raise ConcurrentUpdate(
                f"conversation {record.id} was saved by someone else while this save ran; "
                "get() it again and reapply the change"
            ) from exc
        record.version = stored.version
        record.updated_at = updated_at

    async def replay_save(self, record: ConversationRecord, text: str, base: ConversationRecord | None) -> int:
        """Write ``record`` (already at its new version; ``text`` its stored JSON) if the stored
        one is the version before it; ``base`` is the record it was changed from (its index
        entries are moved). Returns 1 written, 0 already written by an earlier replay, -1 someone
        else saved (kept), -2 not stored. Safe to repeat."""
        key = self._key("conv", record.id)

        async def op() -> int:
            done = int(await self._replay_save(keys=[key], args=[text, record.version]))
            if done >= 0:
                pipe = self._redis.pipeline(transaction=True)
                stale = set(self._index_keys(base)) - set(self._index_keys(record)) if base is not None else set()
                for index in stale:
                    pipe.zrem(index, record.id)
                for index in self._index_keys(record) + [self._key("recent")]:
                    pipe.zadd(index, {record.id: record.updated_at}, gt=True)
                await pipe.execute()
            return done

        return await self._call("replaying a saved conversation", op())

    async def find_recent(
        self, *, customer_id: str = "", caller_id: str = "", within_seconds: float
    ) -> ConversationRecord | None:
        since = self.clock() - within_seconds
        for kind, value in (("customer", customer_id), ("caller", caller_id)):
            if not value:
                continue
            ids = await self._call(
                "looking up a recent conversation",
                self._redis.zrevrangebyscore(self._key(kind, value), "+inf", since, start=0, num=_RECENT_SCAN),
            )
            if not ids:
                continue
            texts = await self._call(
                "looking up a recent conversation", self._redis.mget([self._key("conv", i) for i in ids])
            )
            for text in texts:
                if text is None:
                    continue
                record = self._load(text)
                matches = record.customer_id == value if kind == "customer" else record.caller_id == value
                if matches and record.status != "closed" and record.updated_at >= since:
                    return record
        return None

    async def append(
        self,
        conversation_id: str,
        *,
        channel: str,
        kind: str,
        payload: dict[str, Any],
        sensitive: Iterable[str] = (),
    ) -> LoggedEvent:
        clean, payload_text = event_payload(self.redactor, conversation_id, payload, sensitive)
        logged, _ = await self.append_clean(conversation_id, at=self.clock(), channel=channel, kind=kind,
                                            clean=clean, payload_text=payload_text, uid=new_id())
        return logged

    async def append_clean(self, conversation_id: str, *, at: float, channel: str, kind: str, clean: dict[str, Any],
                           payload_text: str, uid: str, after_seq: int = -1) -> tuple[LoggedEvent, bool]:
        """Append an already redacted event; also returns whether it was added now. ``uid``
        names it inside its entry; with ``after_seq`` >= 0 (a replay) an entry after that seq
        holding the same uid is answered (False) instead of adding a second one."""
        entry = {"conversation_id": conversation_id, "at": at, "channel": channel, "kind": kind, "payload": clean,
                 "uid": uid}
        text = dumps(entry, f"an event of conversation {conversation_id}")
        seq, fresh = await self._call(
            "appending to the event log",
            self._append(
                keys=[self._key("conv", conversation_id), self._key("seq", conversation_id),
                      self._key("events", conversation_id), self._key("feed")],
                args=[text, self.feed_max_len, conversation_id, repr(at), channel, kind, payload_text, uid,
                      after_seq],
            ),
        )
        if int(seq) < 0:
            raise not_stored(conversation_id, event=True)
        return LoggedEvent(seq=int(seq), conversation_id=conversation_id, at=at, channel=channel, kind=kind,
                           payload=clean), bool(int(fresh))

    async def events(self, conversation_id: str, *, limit: int | None = None) -> list[LoggedEvent]:
        key = self._key("events", conversation_id)
        if limit is not None and limit <= 0:
            return []
        start = 0 if limit is None else -limit
        items = await self._call("reading the event log", self._redis.lrange(key, start, -1))
        out = []
        for item in items:
            data = json.loads(item)
            out.append(LoggedEvent(seq=int(data["seq"]), conversation_id=conversation_id, at=float(data["at"]),
                                   channel=data["channel"], kind=data["kind"], payload=data["payload"]))
        return out

    async def recent(self, limit: int = 50) -> list[ConversationRecord]:
        if limit <= 0:
            return []
        ids = await self._call("listing recent conversations", self._redis.zrevrange(self._key("recent"), 0, limit - 1))
        if not ids:
            return []
        texts = await self._call("listing recent conversations", self._redis.mget([self._key("conv", i) for i in ids]))
        return [self._load(t) for t in texts if t is not None]

    # -- store-wide operations (gateway.context.lifecycle) -----------------------------

    async def conversations_between(self, since: float, until: float, *,
                                    limit: int = MAX_SCAN) -> list[ConversationRecord]:
        count = max(0, min(limit, MAX_SCAN))
        if count == 0:
            return []
        ids = await self._call("scanning conversations", self._redis.zrangebyscore(
            self._key("recent"), repr(since), repr(until), start=0, num=count))
        out: list[ConversationRecord] = []
        for start in range(0, len(ids), lifecycle.SCAN_BATCH):
            batch = ids[start:start + lifecycle.SCAN_BATCH]
            texts = await self._call("scanning conversations", self._redis.mget([self._key("conv", i) for i in batch]))
            out += [self._load(t) for t in texts if t is not None]
        return out

    async def conversation_ids(self, *, customer_id: str = "", caller_ids: Iterable[str] = ()) -> list[str]:
        return await self._call("finding a customer's conversations",
                                lifecycle.ids_for(self, customer_id, list(caller_ids)))

    async def feed(self, after: str = "", *, limit: int = 100) -> list[FeedEntry]:
        count = max(1, min(limit, MAX_FEED_BATCH))
        entries = await self._call("reading the feed", self._redis.xrange(
            self._key("feed"), min=f"({after}" if after else "-", max="+", count=count))
        return [FeedEntry(entry_id, LoggedEvent(
            seq=int(f["seq"]), conversation_id=f["conversation_id"], at=float(f["at"]), channel=f["channel"],
            kind=f["kind"], payload=json.loads(f["payload"]))) for entry_id, f in entries]

    async def feed_head(self) -> str:
        last = await self._call("reading the feed", self._redis.xrevrange(self._key("feed"), count=1))
        return str(last[0][0]) if last else ""

    async def erase_conversations(self, ids: Iterable[str], *, actor: str, reason: str) -> PurgeCounts:
        return await self._call("erasing conversations",
                                lifecycle.erase(self, list(dict.fromkeys(ids)), actor=actor, reason=reason))

    async def expire(self, cutoffs: Cutoffs, *, actor: str) -> PurgeCounts:
        return await self._call("applying retention", lifecycle.expire(self, cutoffs, actor=actor))

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless Redis answers (for start-up checks and ``doctor``)."""
        await self._call("checking the connection", self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
