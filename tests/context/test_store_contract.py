"""The ContextStore contract, run against both backends: a real SQLite file and a real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import redis as syncredis

from gateway.context.redis_store import RedisStore
from gateway.context.sqlite_store import SqliteStore
from gateway.context.store import ConcurrentUpdate, ContextStore, StoreError
from gateway.core.dialog_state import DialogState, Frame, Retries, StepUp, Transferred
from gateway.core.handoff import Closing, Handoff
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)

HOUR = 3600.0


class Clock:
    """A settable clock so windows are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    def __init__(self, store: ContextStore, raw: Any, write: Any, read: Any) -> None:
        self.store = store
        self.raw = raw  # () -> bytes: everything the backend has persisted
        self.write = write  # (conversation id, record JSON text): store a record as an older version did
        self.read = read  # conversation id -> the stored record's JSON text


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = Clock()
    if request.param == "sqlite":
        path = tmp_path / "data" / "conversations.db"
        store: Any = SqliteStore(path, busy_timeout_ms=2000, clock=clock)

        def raw() -> bytes:
            return b"".join(p.read_bytes() for p in path.parent.glob("conversations.db*"))

        def write(cid: str, text: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE conversations SET record = ? WHERE id = ?", (text, cid))

        def read(cid: str) -> str:
            with sqlite3.connect(path) as conn:
                return str(conn.execute("SELECT record FROM conversations WHERE id = ?", (cid,)).fetchone()[0])
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisStore(url, prefix=f"t{uuid.uuid4().hex[:6]}:", clock=clock)
        client = syncredis.Redis.from_url(url)

        def raw() -> bytes:
            out = b""
            for key in client.keys("*"):
                kind = client.type(key)
                if kind == b"string":
                    out += client.get(key) or b""
                elif kind == b"list":
                    out += b"".join(client.lrange(key, 0, -1))
                elif kind == b"zset":
                    out += b"".join(client.zrange(key, 0, -1))
            return out

        def write(cid: str, text: str) -> None:
            client.set(store._key("conv", cid), text)

        def read(cid: str) -> str:
            return (client.get(store._key("conv", cid)) or b"").decode()
    store.clock_ = clock
    yield Backend(store, raw, write, read)
    await store.close()


async def test_create_get_save_roundtrip(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(caller_id="+15551234567", customer_id="C001", channel="voice")
    assert len(rec.id) == 32 and rec.version == 0 and rec.channels == ["voice"] and rec.status == "active"
    got = await store.get(rec.id)
    assert got == rec
    rec.journey, rec.step = "order_status", "ask_order"
    rec.slots = {"order_id": "O1001", "when": dt.date(2026, 3, 14)}
    rec.verified["identity"] = 1_700_000_100.0
    rec.state.retries = Retries(no_match=1)
    rec.state.history = [Frame("welcome", "route")]
    store.clock_.now += 5
    await store.save(rec)
    assert rec.version == 1 and rec.updated_at == store.clock_.now
    got = await store.get(rec.id)
    assert got is not None
    assert got.version == 1 and got.journey == "order_status" and got.step == "ask_order"
    assert got.slots == {"order_id": "O1001", "when": "2026-03-14"}  # dates are stored as ISO text
    assert got.verified == {"identity": 1_700_000_100.0}
    assert got.state == DialogState(retries=Retries(no_match=1), history=[Frame("welcome", "route")])
    assert await store.get("0" * 32) is None


async def test_resume_from_another_channel_within_the_window(backend: Backend) -> None:
    store = backend.store
    call = await store.create(caller_id="+15551234567", customer_id="C001", channel="voice")
    call.verified["identity"] = store.clock_.now
    await store.save(call)
    store.clock_.now += 20 * 60  # twenty minutes later the customer opens the web chat
    found = await store.find_recent(customer_id="C001", within_seconds=HOUR)
    assert found is not None and found.id == call.id and found.verified == call.verified
    found.add_channel("chat")
    found.add_channel("voice")
    await store.save(found)
    again = await store.get(call.id)
    assert again is not None and again.channels == ["voice", "chat"]
    by_caller = await store.find_recent(caller_id="+15551234567", within_seconds=HOUR)
    assert by_caller is not None and by_caller.id == call.id
    assert await store.find_recent(customer_id="C999", within_seconds=HOUR) is None
    assert await store.find_recent(within_seconds=HOUR) is None


async def test_outside_the_window_or_closed_is_not_resumed(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(customer_id="C002", channel="sms")
    store.clock_.now += 2 * HOUR
    assert await store.find_recent(customer_id="C002", within_seconds=HOUR) is None
    assert await store.find_recent(customer_id="C002", within_seconds=3 * HOUR) is not None
    rec.status = "transferred"
    await store.save(rec)
    found = await store.find_recent(customer_id="C002", within_seconds=HOUR)
    assert found is not None and found.status == "transferred"
    rec.status = "closed"
    await store.save(rec)
    assert await store.find_recent(customer_id="C002", within_seconds=HOUR) is None


async def test_most_recently_updated_conversation_wins(backend: Backend) -> None:
    store = backend.store
    first = await store.create(customer_id="C003", channel="voice")
    store.clock_.now += 10
    second = await store.create(customer_id="C003", channel="chat")
    store.clock_.now += 10
    first.step = "touched"
    await store.save(first)
    found = await store.find_recent(customer_id="C003", within_seconds=HOUR)
    assert found is not None and found.id == first.id
    first.status = "closed"
    await store.save(first)
    found = await store.find_recent(customer_id="C003", within_seconds=HOUR)
    assert found is not None and found.id == second.id


async def test_customer_identified_later_is_found_by_customer_id(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(caller_id="+15550000000", channel="voice")
    rec.customer_id = "C004"
    await store.save(rec)
    rec.customer_id = "C005"  # a wrong identification corrected
    await store.save(rec)
    assert await store.find_recent(customer_id="C004", within_seconds=HOUR) is None
    found = await store.find_recent(customer_id="C005", within_seconds=HOUR)
    assert found is not None and found.id == rec.id


async def test_stale_save_raises_concurrent_update(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(customer_id="C001")
    a = await store.get(rec.id)
    b = await store.get(rec.id)
    assert a is not None and b is not None
    a.slots["x"] = 1
    await store.save(a)
    b.slots["y"] = 2
    with pytest.raises(ConcurrentUpdate):
        await store.save(b)
    assert b.version == 0  # the failed save changed nothing
    stored = await store.get(rec.id)
    assert stored is not None and stored.slots == {"x": 1} and stored.version == 1


async def test_simultaneous_saves_only_one_wins(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(customer_id="C001")
    copies = [await store.get(rec.id) for _ in range(4)]
    for i, copy in enumerate(copies):
        assert copy is not None
        copy.slots["writer"] = i
    results = await asyncio.gather(*(store.save(c) for c in copies if c), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ConcurrentUpdate) for r in results if r is not None)


async def test_save_of_unknown_or_invalid_record_is_refused(backend: Backend) -> None:
    store = backend.store
    rec = await store.create()
    ghost = await store.get(rec.id)
    assert ghost is not None
    ghost.id = uuid.uuid4().hex
    with pytest.raises(StoreError) as info:
        await store.save(ghost)
    assert not isinstance(info.value, ConcurrentUpdate) and "create()" in str(info.value)
    rec.status = "finished"
    with pytest.raises(StoreError, match="status"):
        await store.save(rec)
    rec.status = "active"
    rec.slots["handle"] = object()
    with pytest.raises(StoreError, match="cannot store"):
        await store.save(rec)


async def test_event_log_is_ordered_and_limited(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(channel="voice")
    other = await store.create(channel="chat")
    for i in range(5):
        store.clock_.now += 1
        ev = await store.append(rec.id, channel="voice", kind="UserSaid", payload={"text": f"turn {i}"})
        assert ev.seq == i + 1 and ev.at == store.clock_.now
    await store.append(other.id, channel="chat", kind="ChatMessage", payload={"text": "other"})
    events = await store.events(rec.id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.payload["text"] for e in events] == [f"turn {i}" for i in range(5)]
    assert all(e.conversation_id == rec.id and e.kind == "UserSaid" for e in events)
    assert [e.seq for e in await store.events(rec.id, limit=2)] == [4, 5]
    assert [e.payload for e in await store.events(other.id)] == [{"text": "other"}]
    with pytest.raises(StoreError, match="not in the store"):
        await store.append(uuid.uuid4().hex, channel="voice", kind="UserSaid", payload={})


async def test_secrets_never_reach_the_persisted_bytes(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(customer_id="C001", channel="voice")
    said = [
        "my card is 4111 1111 1111 1111 expiring soon",
        "the other card 5500-0000-0000-0004",
        "my social is 078-05-1120",
        "and my pin is 97531",
    ]
    for text in said:
        await store.append(rec.id, channel="voice", kind="UserSaid", payload={"text": text})
    # a slot the journey marks sensitive, said as digits, logged in nested payloads and words
    await store.append(
        rec.id, channel="voice", kind="SlotFilled",
        payload={"slot": "security_answer", "value": "Rosebud", "heard": "it was rosebud I think"},
        sensitive=["Rosebud"],
    )
    await store.append(rec.id, channel="voice", kind="DtmfPressed", payload={"pin": "24680"})
    await store.append(
        rec.id, channel="voice", kind="UserSaid",
        payload={"text": "eight six four two", "sensitive": True},
    )
    events = await store.events(rec.id)
    texts = [e.payload.get("text") for e in events]
    assert texts[0] == "my card is [card ****1111] expiring soon"
    assert texts[1] == "the other card [card ****0004]"
    assert texts[2] == "my social is [id]"
    assert texts[3] == "and my pin is [pin]"
    assert events[4].payload == {"slot": "security_answer", "value": "[redacted]", "heard": "it was [redacted] I think"}
    assert events[5].payload == {"pin": "[pin]"}
    assert events[6].payload["text"] == "[redacted]"
    raw = backend.raw()
    assert b"[card ****1111]" in raw  # the log really is in what we read
    for secret in (b"4111 1111 1111 1111", b"4111111111111111", b"5500-0000-0000-0004", b"078-05-1120",
                   b"97531", b"24680", b"Rosebud", b"rosebud", b"eight six four two"):
        assert secret not in raw, secret


async def test_recent_lists_newest_first(backend: Backend) -> None:
    store = backend.store
    ids = []
    for i in range(4):
        store.clock_.now += 1
        ids.append((await store.create(customer_id=f"C{i}")).id)
    assert [r.id for r in await store.recent(limit=3)] == ids[::-1][:3]
    assert await store.recent(limit=0) == []


async def test_the_record_itself_never_persists_secrets(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(customer_id="C001", channel="chat")
    rec.state.handoff = Handoff().closed("resolved", "my card is 4111 1111 1111 1111 and my pin is 97531", "bob", 1.0)
    rec.slots.update({"account_number": "12345678", "pin": "24680", "order_id": "10001",
                      "note": "ssn 078-05-1120"})
    await store.save(rec)
    got = await store.get(rec.id)
    assert got is not None
    assert got.state.handoff.closings[0].notes == "my card is [card ****1111] and my pin is [pin]"
    assert got.slots == {"account_number": "12345678", "pin": "[pin]", "order_id": "10001", "note": "ssn [id]"}
    assert rec.slots["pin"] == "24680"  # the caller's copy is left as it was
    raw = backend.raw()
    for secret in (b"4111 1111 1111 1111", b"97531", b"24680", b"078-05-1120"):
        assert secret not in raw, secret


OLD_STATE = {
    # the dialog state as the core kept it before it had a type: fourteen-odd string keys
    "stack": [["billing_dispute", "ask_invoice"]],
    "history": [["welcome", "route"], ["verify_identity", "ask_account"]],
    "retries": {"no_match": 2},
    "confirming": "ask_amount",
    "step_up": {"session": "s-chat", "frame": ["billing_dispute", "ask_invoice"]},
    "pending_dtmf": "12",
    "pending_journey": "appointment",
    "intent": "billing_dispute",
    "frustration": 0.6,
    "forms": ["upload_document"],
    "verify_failures": 1,
    "transfer": {"queue": "billing", "reason": "customer asked for an agent", "at": 1_700_000_050.0,
                 "channel": "chat"},
    "agent": "bob",
    "handoff": {"waiting": False, "agent": "bob", "agent_name": "Bob", "since": 1_700_000_060.0, "channel": "chat",
                "choice": "", "closings": [{"code": "resolved", "notes": "ok", "agent": "amy", "at": 1.0}],
                "message_ids": ["customer:m1"]},
    "outbound_sessions": ["s-call"],
    "last_text": "the raw words of the last turn, which no version should have kept",
    "from_a_newer_node": {"kept": True},
}


async def test_a_record_stored_with_the_old_string_keys_loads_typed(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(customer_id="C001", channel="chat")
    old = {"id": rec.id, "created_at": rec.created_at, "updated_at": rec.updated_at, "customer_id": "C001",
           "caller_id": "", "channels": ["chat"], "journey": "billing_dispute", "step": "ask_amount",
           "slots": {"invoice_id": "INV-1"}, "verified": {}, "status": "transferred", "state": OLD_STATE,
           "trust": {}, "version": 0}
    backend.write(rec.id, json.dumps(old))
    got = await store.get(rec.id)
    assert got is not None
    state = got.state
    assert state.stack == [Frame("billing_dispute", "ask_invoice")]
    assert state.history == [Frame("welcome", "route"), Frame("verify_identity", "ask_account")]
    assert state.retries == Retries(no_input=0, no_match=2) and state.retries.count("no_match") == 2
    assert state.confirming == "ask_amount" and state.pending_dtmf == "12" and state.pending_journey == "appointment"
    assert state.step_up == StepUp("s-chat", Frame("billing_dispute", "ask_invoice"))
    assert state.intent == "billing_dispute" and state.frustration == 0.6 and state.forms == ["upload_document"]
    assert state.verify_failures == 1 and state.agent == "bob" and state.outbound_sessions == ["s-call"]
    assert state.transfer == Transferred("billing", "customer asked for an agent", 1_700_000_050.0, "chat")
    assert state.handoff.agent == "bob" and state.handoff.engaged and state.handoff.seen("customer:m1")
    assert state.handoff.closings == (Closing("resolved", "ok", "amy", 1.0),)
    assert state.extra == {"from_a_newer_node": {"kept": True}}  # a key this version does not know
    # saved again, it is stored with the same keys (a node still running the old code reads it),
    # less the retired raw text; the unknown key goes back as it came
    await store.save(got)
    stored = json.loads(backend.read(rec.id))["state"]
    expected = {k: v for k, v in OLD_STATE.items() if k != "last_text"}
    assert stored == expected
    assert (await store.get(rec.id)).state == state


async def test_a_malformed_old_state_loads_with_defaults_not_an_error(backend: Backend,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    store = backend.store
    rec = await store.create(customer_id="C001", channel="voice")
    text = json.loads(backend.read(rec.id))
    text["state"] = {"stack": "not a list", "retries": 3, "frustration": "very", "intent": "order_status",
                     "step_up": {"session": "s"}, "handoff": None}
    backend.write(rec.id, json.dumps(text))
    with caplog.at_level(logging.WARNING):
        got = await store.get(rec.id)
    assert got is not None
    assert got.state == DialogState(intent="order_status")  # what could be read is kept, the rest reset
    assert "stack" in caplog.text and "retries" in caplog.text and "frustration" in caplog.text
    assert rec.id in caplog.text
