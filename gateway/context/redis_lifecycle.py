"""The store-wide operations of the Redis context store (:mod:`gateway.context.lifecycle`).

Keys (``{p}`` is the store's prefix) beside those :mod:`gateway.context.redis_store` lists:

- ``{p}feed``        a Redis Stream: one entry per event (fields ``conversation_id``, ``seq``,
                     ``at``, ``channel``, ``kind``, ``payload`` as JSON), added by the append
                     script in the same atomic step as the event; trimmed to ``feed_max_len``
- ``{p}retention``   a hash: how far each retention kind has gone (epoch seconds)
- ``{p}purges``      a stream: one entry per purge (when, who, why, counts)

Redis has no triggers: purges are MULTI transactions (WATCH where a conversation could change
meanwhile), and each is recorded in ``{p}purges`` and, by the caller, in the audit log.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable

from redis.exceptions import WatchError

from gateway.context.lifecycle import Cutoffs, PurgeCounts, strip_personal
from gateway.context.store import dumps, load_record, record_to_json

if TYPE_CHECKING:
    from gateway.context.redis_store import RedisStore

SCAN_BATCH = 500
"""Stream entries and conversation ids handled per round trip."""

WATCH_RETRIES = 5
"""A conversation rewritten by retention while a node appends to it is retried this often."""


# XDEL only marks a stream entry deleted: its bytes stay in the stream's node until every entry
# of the node goes. After an erasure the stream is rebuilt, atomically, with the same entry ids,
# its last id and its consumer groups (at their last delivered id; entries a consumer had read but
# not acknowledged are delivered again to the group, since the pending lists cannot be carried).
_COMPACT_SCRIPT = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return 0 end
local entries = redis.call('XRANGE', key, '-', '+')
local info = redis.call('XINFO', 'STREAM', key)
local last = '0-0'
for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i + 1] end end
local groups = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local name, delivered = nil, '0-0'
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then delivered = g[i + 1] end
  end
  table.insert(groups, {name, delivered})
end
redis.call('DEL', key)
for _, e in ipairs(entries) do redis.call('XADD', key, e[1], unpack(e[2])) end
if #entries == 0 then
  redis.call('XGROUP', 'CREATE', key, 'voicegw-compact', '0', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', key, 'voicegw-compact')
end
redis.call('XSETID', key, last)
for _, g in ipairs(groups) do redis.call('XGROUP', 'CREATE', key, g[1], g[2]) end
return #entries
"""


async def compact_stream(redis: Any, key: str) -> None:
    """Rebuild ``key`` so that the bytes of entries deleted from it are gone."""
    await redis.eval(_COMPACT_SCRIPT, 1, key)


async def _delete_conversations(store: "RedisStore", ids: list[str], counts: PurgeCounts) -> None:
    r = store._redis
    for start in range(0, len(ids), SCAN_BATCH):
        batch = ids[start:start + SCAN_BATCH]
        texts = await r.mget([store._key("conv", i) for i in batch])
        lengths = await _pipeline(store, [("llen", store._key("events", i)) for i in batch])
        pipe = r.pipeline(transaction=True)
        for cid, text in zip(batch, texts):
            pipe.delete(store._key("conv", cid), store._key("events", cid), store._key("seq", cid))
            pipe.zrem(store._key("recent"), cid)
            if text is not None:
                record = load_record(text, "Redis context store")
                for key in store._index_keys(record):
                    pipe.zrem(key, cid)
        await pipe.execute()
        counts.add("conversations", sum(1 for t in texts if t is not None))
        counts.add("events", sum(int(n) for n in lengths))
    await _drop_feed_entries(store, set(ids), counts)


async def _pipeline(store: "RedisStore", calls: list[tuple[str, str]]) -> list[Any]:
    pipe = store._redis.pipeline(transaction=False)
    for name, key in calls:
        getattr(pipe, name)(key)
    return list(await pipe.execute())


async def _drop_feed_entries(store: "RedisStore", ids: set[str], counts: PurgeCounts) -> None:
    """XDEL every feed entry of these conversations (one pass over the bounded stream)."""
    if not ids:
        return
    r, key, start, deleted = store._redis, store._key("feed"), "-", False
    while True:
        entries = await r.xrange(key, min=start, max="+", count=SCAN_BATCH)
        if not entries:
            break
        doomed = [entry_id for entry_id, fields in entries if fields.get("conversation_id") in ids]
        if doomed:
            counts.add("feed", int(await r.xdel(key, *doomed)))
            deleted = True
        if len(entries) < SCAN_BATCH:
            break
        start = "(" + entries[-1][0]
    if deleted:
        await compact_stream(r, key)


async def erase(store: "RedisStore", ids: list[str], *, actor: str, reason: str) -> PurgeCounts:
    counts = PurgeCounts()
    await _delete_conversations(store, ids, counts)
    await _record(store, actor, reason, counts)
    return counts


async def _record(store: "RedisStore", actor: str, reason: str, counts: PurgeCounts) -> None:
    await store._redis.xadd(store._key("purges"), {"at": repr(store.clock()), "actor": actor, "reason": reason,
                                                   "counts": json.dumps(counts.as_dict())})


async def _ids_between(store: "RedisStore", since: float, until: float) -> list[str]:
    low = "-inf" if since == float("-inf") else repr(since)
    return list(await store._redis.zrangebyscore(store._key("recent"), low, f"({until!r}"))


async def _mark(store: "RedisStore", kind: str) -> float:
    value = await store._redis.hget(store._key("retention"), kind)
    return float(value) if value is not None else float("-inf")


async def _rewrite(store: "RedisStore", key: str, change: Any) -> bool:
    """Apply ``change(pipe, current)`` to ``key`` under WATCH; False when nothing was to change."""
    for _ in range(WATCH_RETRIES):
        async with store._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                changed = await change(pipe)
                if not changed:
                    await pipe.reset()
                    return False
                await pipe.execute()
                return True
            except WatchError:
                continue
    raise WatchError(f"{key} kept changing while retention rewrote it")


async def _strip_transcript(store: "RedisStore", cid: str) -> int:
    key = store._key("events", cid)
    stripped_count = 0

    async def change(pipe: Any) -> bool:
        nonlocal stripped_count
        items = await pipe.lrange(key, 0, -1)
        out, stripped_count = [], 0
        for item in items:
            entry = json.loads(item)
            clean = strip_personal(entry.get("payload", {}))
            if clean != entry.get("payload"):
                stripped_count += 1
                entry["payload"] = clean
            out.append(dumps(entry, "an expired event"))
        if not stripped_count:
            return False
        pipe.multi()
        pipe.delete(key)
        pipe.rpush(key, *out)
        return True

    return stripped_count if await _rewrite(store, key, change) else 0


async def _clear_slots(store: "RedisStore", cid: str) -> bool:
    key = store._key("conv", cid)

    async def change(pipe: Any) -> bool:
        text = await pipe.get(key)
        if text is None:
            return False
        record = load_record(text, "Redis context store")
        if not record.slots and not record.trust and record.state == record.state.purged():
            return False
        record.slots, record.trust = {}, {}
        record.state = record.state.purged()
        record.version += 1
        pipe.multi()
        pipe.set(key, record_to_json(record))
        return True

    return await _rewrite(store, key, change)


async def expire(store: "RedisStore", cutoffs: Cutoffs, *, actor: str) -> PurgeCounts:
    counts = PurgeCounts()
    r = store._redis
    if cutoffs.conversations > 0:
        await _delete_conversations(store, await _ids_between(store, float("-inf"), cutoffs.conversations), counts)
    if cutoffs.transcripts > 0:
        ids = await _ids_between(store, await _mark(store, "transcripts"), cutoffs.transcripts)
        for cid in ids:
            counts.add("transcript_events", await _strip_transcript(store, cid))
        await _drop_feed_entries(store, set(ids), counts)  # the stream holds copies of the payloads
        await r.hset(store._key("retention"), "transcripts", repr(cutoffs.transcripts))
    if cutoffs.slots > 0:
        for cid in await _ids_between(store, await _mark(store, "slots"), cutoffs.slots):
            counts.add("slots", int(await _clear_slots(store, cid)))
        await r.hset(store._key("retention"), "slots", repr(cutoffs.slots))
    if cutoffs.feed > 0:
        counts.add("feed", int(await r.xtrim(store._key("feed"), minid=str(int(cutoffs.feed * 1000)),
                                             approximate=False)))
    await _record(store, actor, "retention", counts)
    return counts


async def ids_for(store: "RedisStore", customer_id: str, caller_ids: Iterable[str]) -> list[str]:
    found: list[str] = []
    if customer_id:
        found += await store._redis.zrange(store._key("customer", customer_id), 0, -1)
    for number in caller_ids:
        if number:
            found += await store._redis.zrange(store._key("caller", number), 0, -1)
    return list(dict.fromkeys(found))
