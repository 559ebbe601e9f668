"""Redis-specific behaviour and screen-pop fan-out (in-process and across two Redis clients)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.context import open_fanout, open_store
from gateway.context.fanout import InProcessFanout, RedisFanout
from gateway.context.redis_store import RedisStore
from gateway.context.store import StoreError
from tests.redis_server import free_port, redis_server, redis_url  # noqa: F401  (pytest fixtures)


async def test_open_store_and_fanout_follow_the_backend_setting(redis_url: str, tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": str(tmp_path), "context": {"backend": "redis", "redis_url": redis_url}})
    store = open_store(settings)
    fanout = open_fanout(settings)
    try:
        assert isinstance(store, RedisStore) and isinstance(fanout, RedisFanout)
        rec = await store.create(customer_id="C001", channel="voice")
        assert (await store.get(rec.id)) == rec
        assert not (tmp_path / "conversations.db").exists()
    finally:
        await store.close()
        await fanout.close()
    assert isinstance(open_fanout(load_settings(overrides={"data_dir": str(tmp_path)})), InProcessFanout)


async def test_an_unreachable_redis_gives_a_clear_store_error() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    store = RedisStore(url)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError) as info:
            await store.create(customer_id="C001")
        message = str(info.value)
        assert "Redis" in message and "redis_url" in message and "hunter2" not in message and "***" in message
        assert time.monotonic() - started < 60
        with pytest.raises(StoreError):
            await store.ping()
    finally:
        await store.close()


async def test_screen_pops_fan_out_across_two_nodes(redis_url: str) -> None:
    node_a, node_b = RedisFanout(redis_url), RedisFanout(redis_url)
    try:
        async with node_a.subscribe("screenpop") as desk_a, node_b.subscribe("screenpop") as desk_b:
            other = node_a.subscribe("other")
            await other.start()
            pop = {"conversation_id": "abc", "customer": "Alice Martin", "verified": ["identity"]}
            assert await node_b.publish("screenpop", pop) == 2  # both desktops' connections
            got_a = await asyncio.wait_for(desk_a.__anext__(), 10)
            got_b = await asyncio.wait_for(desk_b.__anext__(), 10)
            assert got_a == pop and got_b == pop
            await node_a.publish("screenpop", {"n": 2})
            assert await asyncio.wait_for(desk_b.__anext__(), 10) == {"n": 2}
            assert await asyncio.wait_for(desk_a.__anext__(), 10) == {"n": 2}
            # nothing was published on "other": it has no message
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(other.__anext__(), 1.5)
            await other.aclose()
        assert await node_b.publish("screenpop", {"n": 3}) == 0  # both unsubscribed on exit
    finally:
        await node_a.close()
        await node_b.close()


async def test_in_process_fanout_delivers_copies_and_refuses_oversized_messages() -> None:
    hub = InProcessFanout()
    first, second = hub.subscribe("screenpop"), hub.subscribe("screenpop")
    await first.start()
    await second.start()
    message = {"conversation_id": "abc", "slots": {"order_id": "O1001"}}
    assert await hub.publish("screenpop", message) == 2
    got = await asyncio.wait_for(first.__anext__(), 5)
    got["slots"]["order_id"] = "changed"
    assert await asyncio.wait_for(second.__anext__(), 5) == message  # not affected by the other's edit
    with pytest.raises(ValueError, match="exceeds"):
        await hub.publish("screenpop", {"blob": "x" * 100_000})
    with pytest.raises(TypeError):
        await hub.publish("screenpop", {"not json": object()})
    await first.aclose()
    assert await hub.publish("screenpop", {"n": 1}) == 1

    received: list[dict] = []

    async def desk() -> None:
        async for msg in second:
            received.append(msg)

    task = asyncio.create_task(desk())
    await asyncio.sleep(0)
    await hub.close()  # ends every subscription's iteration
    await asyncio.wait_for(task, 5)
    assert received == [{"n": 1}]


async def test_closing_a_redis_fanout_ends_its_subscribers_iteration(redis_url: str) -> None:
    node = RedisFanout(redis_url)
    sub = node.subscribe("screenpop")
    await sub.start()
    received: list[dict] = []

    async def desk() -> None:
        async for msg in sub:
            received.append(msg)

    task = asyncio.create_task(desk())
    await node.publish("screenpop", {"n": 1})
    for _ in range(200):
        if received:
            break
        await asyncio.sleep(0.05)
    await node.close()
    await asyncio.wait_for(task, 15)  # ended cleanly, no exception
    assert received == [{"n": 1}]
