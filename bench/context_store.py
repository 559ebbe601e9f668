"""Context store figures: the cost of one conversational turn's store work, per backend.

A turn does roughly: get the record, append the user's event, append the bot's actions (two),
save the record. This prints per-operation latency (median and 95th percentile) and turns per
second for SQLite (WAL, in a temp dir) and, when ``redis-server`` is installed, a private Redis;
plus redaction throughput. Run: ``.venv/bin/python -m bench.context_store``. It never fails.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from gateway.context.redaction import Redactor
from gateway.context.redis_store import RedisStore
from gateway.context.sqlite_store import SqliteStore

TURNS = 400
CONVERSATIONS = 50
UTTERANCE = "my card is 4111 1111 1111 1111 and I was charged twice for the sports package"


def _fmt(samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = statistics.median(samples) * 1000
    p95 = samples[int(len(samples) * 0.95) - 1] * 1000
    return f"median {p50:7.3f} ms   p95 {p95:7.3f} ms"


async def _timed(samples: dict[str, list[float]], name: str, op: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    result = await op
    samples.setdefault(name, []).append(time.perf_counter() - start)
    return result


async def bench_store(label: str, make: Callable[[], Any]) -> None:
    store = make()
    samples: dict[str, list[float]] = {}
    try:
        ids = [(await _timed(samples, "create", store.create(customer_id=f"C{i:03d}", channel="voice"))).id
               for i in range(CONVERSATIONS)]
        started = time.perf_counter()
        for turn in range(TURNS):
            cid = ids[turn % CONVERSATIONS]
            record = await _timed(samples, "get", store.get(cid))
            await _timed(samples, "append (redacted)", store.append(
                cid, channel="voice", kind="UserSaid", payload={"text": UTTERANCE, "confidence": 0.9}))
            for _ in range(2):
                await _timed(samples, "append (redacted)", store.append(
                    cid, channel="bot", kind="Say", payload={"text": "I can see the charge appears twice."}))
            record.slots["turn"] = turn
            await _timed(samples, "save", store.save(record))
        elapsed = time.perf_counter() - started
        for i in range(100):
            await _timed(samples, "find_recent", store.find_recent(customer_id=f"C{i % CONVERSATIONS:03d}",
                                                                   within_seconds=3600))
        await _timed(samples, "events (60 entries)", store.events(ids[0]))
        print(f"\n{label}: {TURNS} turns over {CONVERSATIONS} conversations, "
              f"{TURNS / elapsed:8.1f} turns/s (get + 3 appends + save per turn)")
        for name, values in samples.items():
            print(f"  {name:20s} n={len(values):4d}   {_fmt(values)}")
    finally:
        await store.close()


def bench_redaction() -> None:
    redactor = Redactor()
    n = 5000
    started = time.perf_counter()
    for _ in range(n):
        redactor.redact_text(UTTERANCE, sensitive=("4321",))
    elapsed = time.perf_counter() - started
    print(f"\nredaction: {n / elapsed:10.0f} utterances/s ({elapsed / n * 1e6:.1f} us each, "
          f"{len(UTTERANCE)} chars, one sensitive value)")


async def main() -> None:
    print("context store bench (figures only; nothing here fails)")
    with tempfile.TemporaryDirectory(prefix="voicegw-bench-") as tmp:
        await bench_store("sqlite (WAL, worker thread)", lambda: SqliteStore(Path(tmp) / "c.db"))
        if shutil.which("redis-server"):
            from tests.redis_server import RedisServer

            server = RedisServer(Path(tmp))
            try:
                await bench_store("redis (local redis-server)", lambda: RedisStore(server.url))
            finally:
                server.stop()
        else:
            print("\nredis: skipped (redis-server is not installed)")
    bench_redaction()


if __name__ == "__main__":
    asyncio.run(main())
