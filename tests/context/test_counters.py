"""The shared counters (failed checks, outbound limits), on a real SQLite file and a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest

from gateway.context.counters import Counters, RedisCounters, SqliteCounters
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "redis"])
async def counters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Counters, Clock]]:
    clock = Clock()
    if request.param == "sqlite":
        made: Counters = SqliteCounters(tmp_path / "counters.db", clock=clock)
    else:
        made = RedisCounters(request.getfixturevalue("redis_url"), clock=clock)
    yield made, clock
    await made.close()


async def test_hits_count_inside_the_window_only(counters):
    c, clock = counters
    assert await c.hit("k", window_seconds=60) == 1
    clock.now += 10
    assert await c.hit("k", window_seconds=60) == 2
    clock.now += 55  # the first hit is now 65 s old
    assert await c.count("k", window_seconds=60) == 1
    assert await c.hit("k", window_seconds=60) == 2
    assert await c.count("other", window_seconds=60) == 0
    await c.clear("k")
    assert await c.count("k", window_seconds=60) == 0


async def test_take_stops_at_the_limit_and_frees_with_time(counters):
    c, clock = counters
    assert [await c.take("calls", limit=2, window_seconds=60) for _ in range(3)] == [True, True, False]
    assert await c.count("calls", window_seconds=60) == 2  # a refused take records nothing
    clock.now += 61
    assert await c.take("calls", limit=2, window_seconds=60)


async def test_take_is_atomic_under_concurrency(counters):
    c, _ = counters
    results = await asyncio.gather(*(c.take("burst", limit=5, window_seconds=60) for _ in range(20)))
    assert sum(results) == 5


async def test_locks_hold_until_their_time(counters):
    c, clock = counters
    assert await c.locked_until("customer:C001") == 0.0
    await c.lock("customer:C001", clock.now + 30)
    assert await c.locked_until("customer:C001") == pytest.approx(clock.now + 30)
    clock.now += 31
    assert await c.locked_until("customer:C001") == 0.0


async def test_sqlite_counters_survive_a_restart(tmp_path):
    clock = Clock()
    first = SqliteCounters(tmp_path / "c.db", clock=clock)
    await first.hit("customer:C001", window_seconds=3600)
    await first.lock("customer:C001", clock.now + 600)
    await first.close()
    second = SqliteCounters(tmp_path / "c.db", clock=clock)
    assert await second.count("customer:C001", window_seconds=3600) == 1
    assert await second.locked_until("customer:C001") > clock.now
    await second.close()
