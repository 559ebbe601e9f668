"""With Redis, every event is in a Redis Stream that consumers read with consumer groups: the
conversation core's events arrive there in the same step as they are logged."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from gateway.app import build_core
from gateway.context.redis_store import RedisStore
from tests.analytics.seed import SCRIPTS, Clock, run_script, settings_for
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)


async def test_consumer_groups_read_the_feed_stream_and_replay_from_a_position(redis_url: str,
                                                                               tmp_path: Path) -> None:
    clock = Clock()
    prefix = f"s{uuid.uuid4().hex[:6]}:"
    settings = settings_for(tmp_path, context={"backend": "redis", "redis_url": redis_url},
                            events_out={"redis_stream_max_len": 1000})
    store = RedisStore(redis_url, prefix=prefix, clock=clock, feed_max_len=settings.events_out.redis_stream_max_len)
    core = await build_core(settings, store=store)
    core.clock = clock
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    stream = prefix + "feed"
    try:
        await r.xgroup_create(stream, "warehouse", id="0", mkstream=True)
        cid = await run_script(core, clock, SCRIPTS["agent"])
        log = await store.events(cid)
        got = await r.xreadgroup("warehouse", "loader-1", {stream: ">"}, count=100)
        entries = got[0][1]
        assert [(f["conversation_id"], int(f["seq"]), f["kind"]) for _, f in entries] == [
            (cid, e.seq, e.kind) for e in log]
        assert json.loads(entries[3][1]["payload"]) == log[3].payload  # the redacted payload, as logged
        assert await r.xack(stream, "warehouse", *[i for i, _ in entries]) == len(entries)
        # another consumer of the same group gets nothing already delivered; a new event only
        await run_script(core, clock, SCRIPTS["goodbye"])
        more = await r.xreadgroup("warehouse", "loader-2", {stream: ">"}, count=100)
        assert more[0][1][0][1]["kind"] == "ChatStarted" and len(more[0][1]) == 6
        # replay from a position: the group is set back to just after the third entry
        await r.xgroup_setid(stream, "warehouse", id=entries[2][0])
        again = await r.xreadgroup("warehouse", "loader-1", {stream: ">"}, count=100)
        assert again[0][1][0][0] == entries[3][0]
        # the gateway's own reader sees the same order and positions
        assert [e.position for e in await store.feed("", limit=100)][:len(entries)] == [i for i, _ in entries]
    finally:
        await r.aclose()
        await core.close()
