"""Retention across the stores, on a clock the test moves: transcripts, slots, whole
conversations, SMS, QA scores and the audit log's own (longer) policy; the audit log refuses
every other deletion; a run that removes nothing leaves no trace."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.analytics.source import journey_map
from gateway.context.audit import SqliteAuditLog
from gateway.context.lifecycle import EXPIRED
from gateway.digital.outbox import Outbox
from gateway.governance.qa_job import QaSweep
from gateway.governance.qa_store import open_qa_store
from gateway.governance.retention import purge
from gateway.governance.scorecards import load_scorecards
from tests.analytics.seed import SCRIPTS, Clock, run_script, settings_for, sqlite_core
from tests.redis_server import redis_server, redis_url, stored_bytes  # noqa: F401  (pytest fixtures)

DAY = 86400.0


async def test_each_kind_of_data_goes_after_its_own_period(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, retention={"conversations_days": 60, "transcripts_days": 20, "slots_days": 10,
                                                 "sms_days": 5, "audit_days": 90})
    clock = Clock()
    core = await sqlite_core(settings, clock)
    audit = SqliteAuditLog(settings.data_path("audit.db"), clock=clock)
    qa = open_qa_store(settings)
    outbox = Outbox(settings.data_path("sms.db"), clock=clock)
    try:
        old = await run_script(core, clock, SCRIPTS["bill"])  # Alice, day 0
        outbox.record(direction="out", to="+15551234567", sender="", body="your case 700001", conversation_id=old,
                      transport="outbox", status="stored")
        await audit.write(actor="sam", role="supervisor", action="read", conversation_id=old)
        await QaSweep(settings, core.store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                      journey_map(settings), clock=clock).score_range(0, clock.now + 1)
        clock.now += 30 * DAY
        recent = await run_script(core, clock, SCRIPTS["order_chat"])  # day 30

        done = await purge(settings, core.store, audit, now=clock.now, qa=qa)
        # day 30: the bill's words and slots are gone (older than 20 and 10 days), the SMS too (5);
        # the conversation itself stays (60), and so do its QA score and the audit entry
        assert done["conversations"]["transcript_events"] > 0 and done["conversations"]["slots"] == 1
        assert done["side stores"] == {"sms_messages": 1}
        events = await core.store.events(old)
        said = [e.payload["text"] for e in events if e.kind == "UserSaid"]
        assert said and set(said) == {EXPIRED}
        assert [e.payload["prompt_id"] for e in events if e.kind == "Ask"][0] == "how_help"  # steps stay
        record = await core.store.get(old)
        assert record is not None and record.slots == {} and record.trust == {} and record.status == "closed"
        assert record.state == record.state.purged()  # of the dialog state, only what reports read is kept
        assert (await core.store.get(recent)).slots  # type: ignore[union-attr]
        assert await qa.scores_of([old]) and outbox.messages() == []

        clock.now += 40 * DAY  # day 70: the conversation and its score go; the audit entry stays (90)
        done = await purge(settings, core.store, audit, now=clock.now, qa=qa)
        assert done["conversations"]["conversations"] == 1 and done["qa scores"] == {"scores": 1}
        assert await core.store.get(old) is None
        assert [e.action for e in await audit.entries(conversation_id=old)] == ["read"]
        clock.now += 30 * DAY  # day 100: the audit entry goes under its own policy
        done = await purge(settings, core.store, audit, now=clock.now, qa=qa)
        assert done["audit log"] == {"entries": 1}
        assert await audit.entries(conversation_id=old) == []
        actions = [e.action for e in await audit.entries(limit=20)]
        assert actions.count("retention_purge") == 3
        assert await purge(settings, core.store, audit, now=clock.now, qa=qa) == {
            "qa scores": {}, "conversations": {}, "side stores": {}, "audit log": {}}
        assert [e.action for e in await audit.entries(limit=20)].count("retention_purge") == 3
    finally:
        outbox.close()
        await qa.close()
        await audit.close()
        await core.close()
    with sqlite3.connect(settings.data_path("audit.db")) as conn:
        for sql in ("DELETE FROM audit", "UPDATE audit SET actor = 'x'"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
        assert conn.execute("SELECT reason, count FROM purges").fetchall() == [("retention", 1)]
    with sqlite3.connect(settings.data_path("conversations.db")) as conn:
        # day 30, day 70, day 100 (the day-30 chat grew old then); the empty last run left no row
        assert [r[0] for r in conn.execute("SELECT reason FROM purges")] == ["retention"] * 3


async def test_the_redis_audit_log_keeps_its_own_period(request: pytest.FixtureRequest) -> None:
    import redis as syncredis

    from gateway.context.audit import RedisAuditLog

    url = request.getfixturevalue("redis_url")
    clock = Clock()
    audit = RedisAuditLog(url, clock=clock)
    try:
        await audit.write(actor="sam", role="supervisor", action="read", conversation_id="c1",
                          detail={"note": "old-entry-marker"})
        clock.now += 100 * DAY
        await audit.write(actor="sam", role="supervisor", action="read", conversation_id="c1")
        await audit.write(actor="sam", role="supervisor", action="read", conversation_id="c2",
                          detail={"note": "new-entry-marker"})
        assert await audit.purge_before(clock.now - 90 * DAY, actor="retention") == 1
        assert [e.at for e in await audit.entries(conversation_id="c1")] == [clock.now]
        assert len(await audit.entries(conversation_id="c2")) == 1
        client = syncredis.Redis.from_url(url)
        raw = b"".join(stored_bytes(client, k) for k in client.scan_iter(match="voicegw:audit:*"))
        assert b"old-entry-marker" not in raw and b"new-entry-marker" in raw
    finally:
        await audit.close()
