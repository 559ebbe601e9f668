"""Webhooks fed from the event log through the real core: signed, in order, retried with backoff
on a clock the test controls, dead letters, replay from a position; on SQLite and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from gateway.app import build_core
from gateway.config import EventsOutSettings
from gateway.context.redis_store import RedisStore
from gateway.events_out.deliveries import RedisDeliveries, SqliteDeliveries
from gateway.events_out.publisher import WebhookPublisher
from gateway.events_out.schema import SCHEMA, SIGNATURE_HEADER, verify
from tests.analytics.seed import SCRIPTS, Clock, run_script, settings_for, sqlite_core
from tests.redis_server import free_port, redis_server, redis_url  # noqa: F401  (pytest fixtures)

SECRET = "a-webhook-secret-of-some-length"
REAL_TIMEOUT = 30.0


class Receiver:
    """A real HTTP receiver on a fixed port that can be down (not listening) and come back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.reject: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            data = json.loads(body)
            if data["kind"] in self.reject:
                return web.Response(status=422, text="not for us")
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
            self.received.append(data)
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @property
    def up(self) -> bool:
        return self._runner is not None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Env:
    def __init__(self, core: Any, clock: Clock, deliveries: Any, receiver: Receiver) -> None:
        self.core, self.clock, self.deliveries, self.receiver = core, clock, deliveries, receiver
        self.slept: list[float] = []
        self.back_at = 0.0

    async def sleep(self, seconds: float) -> None:
        """The publisher's waits: the test's clock moves on; the receiver comes back when due."""
        self.slept.append(seconds)
        self.clock.now += seconds
        if self.back_at and self.clock.now >= self.back_at and not self.receiver.up:
            await self.receiver.start()
        await asyncio.sleep(0.002)  # let the rest of the test run; no real waiting

    def publisher(self, **cfg: Any) -> WebhookPublisher:
        hooks = cfg.pop("webhooks", [{"name": "warehouse", "url": self.receiver.url, "secret": SECRET}])
        settings = EventsOutSettings(webhooks=hooks, poll_seconds=0.5, **cfg)
        return WebhookPublisher(settings, self.core.store, self.deliveries, clock=self.clock, sleep=self.sleep)

    async def feed_ids(self) -> list[str]:
        return [f"{e.event.conversation_id}:{e.event.seq}" for e in await self.core.store.feed("", limit=1000)]


@pytest.fixture(params=["sqlite", "redis"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    clock = Clock()
    receiver = Receiver(free_port())
    if request.param == "sqlite":
        core = await sqlite_core(settings_for(tmp_path), clock)
        deliveries: Any = SqliteDeliveries(tmp_path / "events_out.db", clock=clock)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"w{uuid.uuid4().hex[:6]}:"
        store = RedisStore(url, prefix=prefix, clock=clock, feed_max_len=10_000)
        core = await build_core(settings_for(tmp_path, context={"backend": "redis", "redis_url": url}), store=store)
        core.clock = clock
        deliveries = RedisDeliveries(url, prefix=prefix, clock=clock)
    try:
        yield Env(core, clock, deliveries, receiver)
    finally:
        await receiver.stop()
        await deliveries.close()
        await core.close()


async def _until(predicate: Any) -> None:
    deadline = asyncio.get_running_loop().time() + REAL_TIMEOUT
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_receiver_down_for_a_minute_misses_no_event(env: Env) -> None:
    await run_script(env.core, env.clock, SCRIPTS["order_chat"])
    await run_script(env.core, env.clock, SCRIPTS["agent"])
    start = env.clock.now
    env.back_at = start + 60.0  # down for a minute of the publisher's clock
    publisher = env.publisher()
    await publisher.start()
    try:
        expected = await env.feed_ids()
        await _until(lambda: len(env.receiver.received) >= len(expected))
        # events keep coming after it is back: delivered too, after the others
        await run_script(env.core, env.clock, SCRIPTS["goodbye"])
        expected = await env.feed_ids()
        await _until(lambda: len(env.receiver.received) >= len(expected))
        head = await env.core.store.feed_head()
        for _ in range(1000):  # the cursor moves right after the receiver acknowledged
            if await env.deliveries.cursor("warehouse") == head:
                break
            await asyncio.sleep(0.01)
    finally:
        await publisher.close()
    assert [d["id"] for d in env.receiver.received] == expected  # all of them, once, in order
    assert env.clock.now - start >= 60.0 and publisher.dead == 0
    assert await env.deliveries.dead_letters() == []
    waits = [s for s in env.slept if s != 0.5]  # 0.5 s: polls of an idle feed
    assert waits[:7] == [1, 2, 4, 8, 16, 32, 64][: len(waits[:7])] and sum(waits) >= 60.0  # exponential backoff
    first = env.receiver.received[0]
    assert first["schema"] == SCHEMA and first["kind"] == "ChatStarted" and first["source"] == "customer"
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "events.schema.json").read_text())
    for data in env.receiver.received:  # every event as the documented schema says
        assert set(schema["required"]) <= set(data) and data["source"] in schema["properties"]["source"]["enum"]
        assert data["id"] == f"{data['conversation_id']}:{data['seq']}" and data["at"].endswith("Z")
    for headers, body in zip(env.receiver.headers, env.receiver.bodies):
        assert verify(SECRET, headers[SIGNATURE_HEADER], body, now=env.clock.now, tolerance_seconds=3600)
        assert not verify("another-secret-of-some-length", headers[SIGNATURE_HEADER], body, now=env.clock.now,
                          tolerance_seconds=3600)
    assert await env.deliveries.cursor("warehouse") == env.receiver.received[-1]["position"]


async def test_a_rejected_event_goes_to_dead_letters_and_the_rest_flows(env: Env) -> None:
    await env.receiver.start()
    env.receiver.reject = {"Transfer"}
    await run_script(env.core, env.clock, SCRIPTS["agent"])
    publisher = env.publisher()
    await publisher.start()
    try:
        expected = [i for i in await env.feed_ids()]
        await _until(lambda: len(env.receiver.received) + publisher.dead >= len(expected))
    finally:
        await publisher.close()
    dead = await env.deliveries.dead_letters()
    assert [d.event["kind"] for d in dead] == ["Transfer"] and dead[0].attempts == 1 and "422" in dead[0].error
    assert [d["kind"] for d in env.receiver.received] == ["ChatStarted", "Say", "Ask", "ChatMessage", "Say",
                                                          "ScreenPop"]
    assert await env.deliveries.drop_dead_letter(dead[0].id) and await env.deliveries.dead_letters() == []


async def test_an_unreachable_receiver_dead_letters_after_max_attempts_then_replay(env: Env) -> None:
    await run_script(env.core, env.clock, SCRIPTS["goodbye"])  # 6 events
    publisher = env.publisher(max_attempts=3, backoff_base_seconds=10, backoff_max_seconds=15)
    await publisher.start()
    try:
        await _until(lambda: publisher.dead >= 6)
    finally:
        await publisher.close()
    assert [d.attempts for d in await env.deliveries.dead_letters()] == [3] * 6
    assert [s for s in env.slept if s != 0.5][:2] == [10, 15]
    # the receiver is back: replay from the start of the feed (the cursor set back by the operator)
    await env.receiver.start()
    await env.deliveries.advance("warehouse", "")
    publisher = env.publisher()
    await publisher.start()
    try:
        await _until(lambda: len(env.receiver.received) >= 6)
    finally:
        await publisher.close()
    assert [d["id"] for d in env.receiver.received] == await env.feed_ids()


async def test_kinds_filter_and_two_webhooks_each_with_its_cursor(env: Env) -> None:
    await env.receiver.start()
    other = Receiver(free_port())
    await other.start()
    try:
        await run_script(env.core, env.clock, SCRIPTS["agent"])
        publisher = env.publisher(webhooks=[
            {"name": "all", "url": env.receiver.url, "secret": SECRET},
            {"name": "transfers", "url": other.url, "secret": SECRET, "kinds": ["Transfer"]}])
        await publisher.start()
        try:
            total = len(await env.feed_ids())
            await _until(lambda: len(env.receiver.received) >= total and len(other.received) >= 1)
            head = await env.core.store.feed_head()
            for _ in range(1000):
                if await env.deliveries.cursor("transfers") == head == await env.deliveries.cursor("all"):
                    break
                await asyncio.sleep(0.01)
        finally:
            await publisher.close()
        assert [d["kind"] for d in other.received] == ["Transfer"]
        assert await env.deliveries.cursor("transfers") == await env.deliveries.cursor("all") != ""
    finally:
        await other.stop()
