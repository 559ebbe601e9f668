"""A node's conversations through a Redis outage, with the real core on a real redis-server that
the tests stop, start, freeze and cut off: calls go on, every write waits in the node's spool,
and lands in Redis once, in order, when it returns (gateway/context/outage.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.context import open_store
from gateway.context.outage import BufferedStore
from gateway.context.redis_store import RedisStore
from gateway.core.actions import Ask, Say, Transfer
from gateway.core.events import CallStarted, DtmfPressed, UserSaid
from gateway.core.orchestrator import Orchestrator
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A durable redis-server of its own (each test stops and starts it)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server, or run `make test`)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, durable=True)
    yield server
    server.stop()


def _settings(tmp_path: Path, url: str, name: str = "node"):
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path / name),
        "context": {"backend": "redis", "redis_url": url, "outage_timeout_ms": 400, "outage_probe_seconds": 0.2}})


async def _node(tmp_path: Path, url: str, name: str = "node") -> Orchestrator:
    settings = _settings(tmp_path, url, name)
    return await build_core(settings, store=open_store(settings, node=True))


def _texts(actions: list) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))


async def _until(check, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _stored(url: str, cid: str):
    plain = RedisStore(url)
    try:
        return await plain.get(cid), await plain.events(cid), await plain.feed(limit=1000)
    finally:
        await plain.close()


async def _raw_uids(url: str, cid: str) -> list[str]:
    plain = RedisStore(url)
    try:
        return [json.loads(item)["uid"] for item in await plain._redis.lrange(f"voicegw:events:{cid}", 0, -1)]
    finally:
        await plain.close()


async def test_a_call_goes_on_through_an_outage_and_every_event_lands_once_in_order(tmp_path, redis) -> None:
    core = await _node(tmp_path, redis.url)
    store = core.store
    assert isinstance(store, BufferedStore)
    try:
        call = await core.open("voice", caller_id="+15550001111", event=CallStarted(caller_id="+15550001111"))
        cid, sid = call.conversation_id, call.session_id
        acts = await core.handle(cid, UserSaid("there's a wrong charge on my bill", confidence=0.9), session_id=sid)
        assert "account number" in _texts(acts)

        redis.stop()  # mid-journey
        for digit in "12345678":
            acts = await core.handle(cid, DtmfPressed(digit), session_id=sid)
        assert "PIN" in _texts(acts)  # the call goes on: the journey answers from the node's copy
        assert not store.up and len(store.spool) > 0
        for digit in "4321":
            acts = await core.handle(cid, DtmfPressed(digit), session_id=sid)
        # the lockout cannot be checked: no check passes unchecked, the caller goes to a person
        assert any(isinstance(a, Transfer) for a in acts), _texts(acts)
        assert "not responding" in _texts(acts) and "verified" not in _texts(acts)
        local = await store.events(cid)
        local_record = await store.get(cid)

        redis.start()
        await _until(lambda: store.up)
        assert len(store.spool) == 0 and store.stats.replayed == store.stats.spooled
        assert store.stats.conflicts == 0 and store.stats.dropped == 0

        record, events, feed = await _stored(redis.url, cid)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
        assert [(e.seq, e.kind, e.channel, e.payload) for e in events] == \
            [(e.seq, e.kind, e.channel, e.payload) for e in local]  # what the node logged, as it logged it
        kinds = [e.kind for e in events]
        assert kinds.count("DtmfPressed") == 12 and "Transfer" in kinds
        assert record is not None and record.version == local_record.version and record.step == local_record.step
        # the feed (events out) carries the conversation's events in its seq order
        assert [f.event.seq for f in feed if f.event.conversation_id == cid] == [e.seq for e in events]
        # after the outage the next turn writes to Redis directly again
        await core.handle(cid, UserSaid("thank you", confidence=0.9), session_id=sid)
        _, after, _ = await _stored(redis.url, cid)
        assert after[-1].seq > events[-1].seq and len(store.spool) == 0
    finally:
        await core.close()


async def test_writes_that_reached_a_frozen_redis_are_not_written_twice(tmp_path, redis) -> None:
    core = await _node(tmp_path, redis.url)
    store = core.store
    try:
        call = await core.open("voice", caller_id="+15550002222", event=CallStarted(caller_id="+15550002222"))
        cid, sid = call.conversation_id, call.session_id
        record = await store.get(cid)
        redis.freeze()  # the next writes are sent, and wait inside Redis past the outage timeout
        await store.append(cid, channel="voice", kind="UserSaid", payload={"text": "where is my order"})
        assert not store.up
        acts = await core.handle(cid, UserSaid("I don't know it", confidence=0.9), session_id=sid)
        assert _texts(acts)  # the turn is answered from the node's copy
        local = await store.events(cid)
        redis.thaw()  # Redis now runs what it had received, then the node replays its spool
        await _until(lambda: store.up)
        assert store.stats.already_there == 1  # the append that got through was recognized, not repeated
        _, events, _ = await _stored(redis.url, cid)
        uids = await _raw_uids(redis.url, cid)
        assert len(uids) == len(set(uids))
        assert [(e.seq, e.kind, e.payload) for e in events] == [(e.seq, e.kind, e.payload) for e in local]

        record = await store.get(cid)  # the same for a save
        redis.freeze()
        record.slots["note"] = "saved while frozen"
        await store.save(record)
        assert not store.up
        redis.thaw()
        await _until(lambda: store.up)
        assert store.stats.conflicts == 0  # (a save waits on WATCH first: this one never reached Redis)
        stored, _, _ = await _stored(redis.url, cid)
        assert stored is not None and stored.version == record.version and stored.slots["note"] == "saved while frozen"
    finally:
        await core.close()


async def test_a_node_stopped_during_an_outage_replays_its_spool_when_it_starts_again(tmp_path, redis) -> None:
    core = await _node(tmp_path, redis.url)
    call = await core.open("voice", caller_id="+15550003333", event=CallStarted(caller_id="+15550003333"))
    cid, sid = call.conversation_id, call.session_id
    redis.stop()
    await core.handle(cid, UserSaid("I forgot my password", confidence=0.9), session_id=sid)
    local = await core.store.events(cid)
    waiting = len(core.store.spool)
    await core.close()  # the node stops with its writes in the spool file
    assert waiting > 0

    redis.start()
    again = await _node(tmp_path, redis.url)  # same data directory, same spool
    try:
        await _until(lambda: again.store.up)
        record, events, _ = await _stored(redis.url, cid)
        assert [(e.seq, e.kind, e.payload) for e in events] == [(e.seq, e.kind, e.payload) for e in local]
        assert record is not None and record.state.intent == "password_reset" and record.version == 2
    finally:
        await again.close()


async def test_a_conversation_created_during_an_outage_reaches_redis(tmp_path, redis) -> None:
    core = await _node(tmp_path, redis.url)
    try:
        redis.stop()
        call = await core.open("voice", caller_id="+15550004444", event=CallStarted(caller_id="+15550004444"))
        assert "How can I help" in _texts(call.actions)  # a new caller is answered
        await core.handle(call.conversation_id, UserSaid("where is my order", confidence=0.9),
                          session_id=call.session_id)
        redis.start()
        await _until(lambda: core.store.up)
        record, events, _ = await _stored(redis.url, call.conversation_id)
        assert record is not None and record.caller_id == "+15550004444"
        assert [e.kind for e in events][:2] == ["CallStarted", "Say"] and events[-1].seq == len(events)
        # and it is found by its caller id like any other
        plain = RedisStore(redis.url)
        try:
            found = await plain.find_recent(caller_id="+15550004444", within_seconds=600)
        finally:
            await plain.close()
        assert found is not None and found.id == call.conversation_id
    finally:
        await core.close()


class CuttableProxy:
    """A TCP proxy to Redis that the test cuts (a network split for one node only)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.base_events.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


async def test_a_save_that_meets_another_nodes_save_keeps_the_stored_record(tmp_path, redis) -> None:
    proxy = CuttableProxy(redis.port)
    await proxy.open()
    node_a = await _node(tmp_path, proxy.url, "a")  # reaches Redis through the proxy
    node_b = await _node(tmp_path, redis.url, "b")
    try:
        call = await node_a.open("voice", caller_id="+15550005555", event=CallStarted(caller_id="+15550005555"))
        cid = call.conversation_id
        await proxy.cut()  # node A alone loses Redis
        await node_a.handle(cid, UserSaid("where is my order", confidence=0.9), session_id=call.session_id)
        assert not node_a.store.up
        # meanwhile node B (Redis in reach) serves the same conversation
        await node_b.handle(cid, UserSaid("I want to talk to an agent", confidence=0.9), session_id="b-session")
        await proxy.open()  # the split heals (same port)
        await _until(lambda: node_a.store.up)
        record, events, _ = await _stored(redis.url, cid)
        said = [e.payload.get("text") for e in events if e.kind == "UserSaid"]
        assert sorted(said) == ["I want to talk to an agent", "where is my order"]  # both nodes' events kept
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert node_a.store.stats.conflicts == 1  # node A's save was not written over node B's
        # the record is node B's (the transfer), not node A's order journey
        assert record is not None and record.status == "transferred" and record.journey == "welcome"
    finally:
        await node_a.close()
        await node_b.close()
        await proxy.cut()
