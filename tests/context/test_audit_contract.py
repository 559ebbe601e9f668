"""The audit log's contract, run against both backends: a real SQLite file and a real Redis."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from gateway.config import load_settings
from gateway.context import open_audit
from gateway.context.audit import MAX_DETAIL_BYTES, MAX_ENTRIES, AuditLog, RedisAuditLog, SqliteAuditLog
from gateway.context.store import StoreError
from tests.redis_server import free_port, redis_server, redis_url  # noqa: F401  (pytest fixtures)

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "redis"])
async def audit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    clock = Clock()
    if request.param == "sqlite":
        log: Any = SqliteAuditLog(tmp_path / "data" / "audit.db", clock=clock)
    else:
        log = RedisAuditLog(request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex[:6]}:", clock=clock)
    log.clock_ = clock
    yield log
    await log.close()


async def test_write_then_read_by_conversation_newest_first(audit: AuditLog) -> None:
    first = await audit.write(actor="alice", role="agent", action="read", conversation_id="c1",
                              detail={"via": "rest", "address": "10.0.0.7"})
    audit.clock_.now += 1
    await audit.write(actor="bob", role="agent", action="read_refused", conversation_id="c2",
                      detail={"via": "rest"})
    audit.clock_.now += 1
    await audit.write(actor="carol", role="supervisor", action="read", conversation_id="c1",
                      detail={"via": "screen-pop"})
    got = await audit.entries(conversation_id="c1")
    assert [(e.actor, e.role, e.action) for e in got] == [("carol", "supervisor", "read"), ("alice", "agent", "read")]
    assert got[1] == first and got[1].detail == {"via": "rest", "address": "10.0.0.7"}
    assert got[1].at == 1_700_000_000.0 and got[0].at == 1_700_000_002.0
    assert got[0].as_json()["at"].startswith("2023-11-14T22:13:22")
    assert [e.actor for e in await audit.entries()] == ["carol", "bob", "alice"]
    assert await audit.entries(conversation_id="nobody") == []


async def test_system_entries_without_a_conversation(audit: AuditLog) -> None:
    entry = await audit.write(actor="system", role="system", action="verification_locked",
                              detail={"customer": "C001", "failures": 5})
    assert entry.conversation_id == "" and entry.detail["failures"] == 5
    assert (await audit.entries(limit=1))[0] == entry
    with pytest.raises(ValueError):
        await audit.write(actor="", role="agent", action="read")


async def test_reads_are_bounded(audit: AuditLog) -> None:
    for i in range(30):
        await audit.write(actor=f"a{i}", role="agent", action="read", conversation_id="c")
    assert [e.actor for e in await audit.entries(conversation_id="c", limit=3)] == ["a29", "a28", "a27"]
    assert len(await audit.entries(conversation_id="c", limit=10 * MAX_ENTRIES)) == 30
    with pytest.raises(ValueError):
        await audit.entries(limit=0)


async def test_big_detail_is_replaced_by_its_keys_and_long_fields_clipped(audit: AuditLog) -> None:
    entry = await audit.write(actor="x" * 5000, role="agent", action="read", conversation_id="c",
                              detail={"blob": "y" * (2 * MAX_DETAIL_BYTES), "via": "rest"})
    stored = (await audit.entries(conversation_id="c"))[0]
    assert stored == entry and len(stored.actor) == 200
    assert stored.detail == {"truncated": True, "keys": ["blob", "via"]}


async def test_unfiltered_read_spans_days(audit: AuditLog) -> None:
    await audit.write(actor="old", role="agent", action="signin")
    audit.clock_.now += 3 * DAY
    await audit.write(actor="new", role="agent", action="signin")
    assert [e.actor for e in await audit.entries()] == ["new", "old"]
    assert [e.actor for e in await audit.entries(limit=1)] == ["new"]


async def test_sqlite_log_is_append_only_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = SqliteAuditLog(path)
    await log.write(actor="alice", role="agent", action="read", conversation_id="c1")
    await log.close()
    conn = sqlite3.connect(path)
    for sql in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()
    log = SqliteAuditLog(path)
    try:
        assert [e.actor for e in await log.entries(conversation_id="c1")] == ["alice"]
    finally:
        await log.close()


async def test_corrupt_sqlite_file_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move the file aside"):
        SqliteAuditLog(path)


async def test_unreachable_redis_is_a_store_error_without_the_password() -> None:
    log = RedisAuditLog(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreError) as exc:
            await log.write(actor="alice", role="agent", action="read", conversation_id="c")
        assert "hunter2" not in str(exc.value) and "***" in str(exc.value)
    finally:
        await log.close()


async def test_open_audit_follows_the_context_backend(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    sqlite_log = open_audit(load_settings(environ={}, overrides={"data_dir": str(tmp_path)}))
    assert isinstance(sqlite_log, SqliteAuditLog) and sqlite_log.path == tmp_path / "audit.db"
    await sqlite_log.close()
    redis_log = open_audit(load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "context": {"backend": "redis", "redis_url": redis_url}}))
    try:
        assert isinstance(redis_log, RedisAuditLog)
        await redis_log.write(actor="alice", role="agent", action="read", conversation_id="c")
        assert len(await redis_log.entries(conversation_id="c")) == 1
    finally:
        await redis_log.close()
