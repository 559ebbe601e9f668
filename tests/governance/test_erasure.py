"""``voicegw erase`` across every store, on SQLite and on Redis, with the SMS outbox: a customer
who called, was texted a link and opened it, failed PIN checks until locked, was read by a
supervisor, scored by QA and dead-lettered by a webhook. Afterwards nothing of them is found in
any file of the data directory or any Redis key, raw bytes included; another customer is untouched."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as syncredis

from gateway.agents.assignments import open_assignments
from gateway.agents.tokens import hash_token
from gateway.analytics.source import journey_map
from gateway.app import build_core
from gateway.cli import main
from gateway.context import open_audit
from gateway.events_out.deliveries import open_deliveries
from gateway.events_out.schema import envelope
from gateway.governance.qa_job import QaSweep
from gateway.governance.qa_store import open_qa_store
from gateway.governance.scorecards import load_scorecards
from tests.analytics.seed import ALICE, SCRIPTS, Clock, call, keys, run_script, say
from tests.digital.helpers import AGENT_ACCOUNTS, AGENT_TOKENS, start, web_settings
from tests.redis_server import redis_server, redis_url, stored_bytes  # noqa: F401  (pytest fixtures)

ADMIN_TOKEN = "ada.test-token-ada-0123456789abcdef0123456789"
BOB = "+15559876543"


def _settings(tmp_path: Path, backend: str, url: str = "") -> Any:
    accounts = dict(AGENT_ACCOUNTS, ada={"role": "admin", "queues": [], "token_hash": hash_token(ADMIN_TOKEN)})
    context = {"backend": backend, "redis_url": url} if backend == "redis" else {}
    # three failed checks lock a customer here (five by default), so one call shows the lockout
    return web_settings(tmp_path / "data", agents={"accounts": accounts}, context=context,
                        trust={"max_failed_checks": 3})


def _config(tmp_path: Path, settings: Any) -> Path:
    path = tmp_path / "site.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"data_dir": settings.data_dir,
                                "context": {"backend": settings.context.backend,
                                            "redis_url": settings.context.redis_url},
                                "agents": {"accounts": {k: v.model_dump(mode="json")
                                                        for k, v in settings.agents.accounts.items()}}}))
    return path


def _raw(tmp_path: Path, url: str) -> dict[str, bytes]:
    """Every byte the gateway keeps: each file of the data directory, what each Redis key holds."""
    out = {str(p.relative_to(tmp_path)): p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    if url:
        client = syncredis.Redis.from_url(url)
        for key in client.scan_iter(match="*"):
            out[f"redis:{key.decode()}"] = key + b"=" + stored_bytes(client, key)
    return out


def _found(raw: dict[str, bytes], needle: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Files and keys holding ``needle`` (those whose name contains one of ``skip`` aside)."""
    return [name for name, data in raw.items() if needle.encode() in data and not any(s in name for s in skip)]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_erasure_leaves_nothing_of_the_customer_anywhere(backend: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest, capsys: Any) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""
    settings = _settings(tmp_path, backend, url)
    clock = Clock()
    core = await build_core(settings)
    runner = await start(tmp_path / "data", core, deps={"store": core.store, "crm": core.crm},
                         agents={"accounts": dict(settings.agents.accounts)},
                         context=settings.context.model_dump(), trust={"max_failed_checks": 3})
    try:
        # Alice: an order by phone, the tracking link texted to her and opened
        order = await run_script(core, clock, [call(ALICE), say("where is my order"), keys("10001#"),
                                               say("yes please"), say("no")])
        texts = runner.parts.outbox.messages(to=ALICE)
        assert texts, "the tracking link went to the outbox"
        link = re.search(r"/l/[A-Za-z0-9_.\-]+", texts[0].body).group(0)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            async with http.post(runner.url + link, data={}) as resp:
                assert resp.status < 500
            # a supervisor reads her conversation (audited)
            async with http.get(f"{runner.url}/api/conversations/{order}/context",
                                headers={"Authorization": f"Bearer {AGENT_TOKENS['sam']}"}) as resp:
                assert resp.status == 200
        assert runner.parts.signer.is_used(runner.parts.signer.verify(link[3:], check_used=False).nonce)
        # Alice again: three wrong PINs lock her checks (counters, a lock, VerificationLocked in the audit log)
        locked = await run_script(core, clock, [call(ALICE), say("there is a problem with my bill"), say("pin")]
                                  + [keys("1111")] * 3)
        audit = open_audit(settings)
        entries = [e for e in await audit.entries(limit=100) if e.action == "verification_locked"]
        assert entries and entries[0].detail.get("customer_id") == "C001"
        assignments = open_assignments(settings)
        await assignments.assign(order, "alice", how="screen-pop")
        await assignments.close()
        deliveries = open_deliveries(settings)
        first = (await core.store.feed("", limit=1))[0]
        await deliveries.dead_letter("warehouse", first.position, envelope(first.position, first.event), 20, "HTTP 503")
        qa = open_qa_store(settings)
        await QaSweep(settings, core.store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                      journey_map(settings)).score_range(0, 2e9)
        assert await qa.scores_of([order, locked])
        await qa.close()
        await deliveries.close()
        await audit.close()
        # Bob, another customer, stays
        bob = await run_script(core, clock, [call(BOB)] + SCRIPTS["goodbye"][1:])
        before = _raw(tmp_path, url)
        for needle in (ALICE, order, locked, "C001"):
            assert _found(before, needle), needle

        config = _config(tmp_path, settings)
        # a supervisor may not erase; an admin may, and is told what went
        # the command, beside the running gateway (its own event loop, as a separate process would)
        assert await asyncio.to_thread(main, ["--config", str(config), "erase", "--customer", "C001",
                                              "--actor", "sam", "--yes"]) == 2
        assert await asyncio.to_thread(main, ["--config", str(config), "erase", "--customer", "C001",
                                              "--actor", "ada"]) == 0
        assert "2 conversation(s)" in capsys.readouterr().out
        assert _found(_raw(tmp_path, url), order)  # without --yes nothing changed
        assert await asyncio.to_thread(main, ["--config", str(config), "erase", "--customer", "C001",
                                              "--actor", "ada", "--yes", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["conversations"] == 2 and report["numbers"] == 1
        stores = report["stores"]
        assert stores["conversations"]["conversations"] == 2 and stores["sms outbox"]["sms_messages"] >= 1
        assert stores["webhook dead letters"] == {"dead_letters": 1} and stores["qa scores"]["scores"] == 2
        assert stores["audit log (kept; identifiers replaced)"]["entries_scrubbed"] >= 1
        side = stores["redis (links, counters, assignments)" if backend == "redis" else "links, counters, assignments"]
        assert side["used_links"] == 1 and side["assignments"] == 1 and (side.get("counter_hits") or side["counters"])
        assert "crm" in report["not_touched"][0]
    finally:
        await runner.close()
        await core.close()
    after = _raw(tmp_path, url)
    for needle in (ALICE, ALICE.lstrip("+"), "C001", "Alice", "noise-cancelling", "10001"):
        # the CRM is the system of record (not the gateway's to erase)
        assert _found(after, needle, skip=("crm.db",)) == [], needle
    for needle in (order, locked):
        # the audit log keeps who read which conversation (ids of conversations that no longer exist)
        assert _found(after, needle, skip=("crm.db", "audit.db", "voicegw:audit:")) == [], needle
    assert _found(after, bob) and _found(after, BOB)
    # the erasure is in the audit log, under a keyed hash of the customer id
    audit = open_audit(settings)
    try:
        erased = [e for e in await audit.entries(limit=200) if e.action == "erased"]
        assert erased and erased[0].actor == "ada" and len(erased[0].detail["customer_ref"]) == 24
    finally:
        await audit.close()


async def test_subject_access_bundle(tmp_path: Path, capsys: Any) -> None:
    settings = _settings(tmp_path, "sqlite")
    clock = Clock()
    core = await build_core(settings)
    try:
        cid = await run_script(core, clock, SCRIPTS["bill"])
        await run_script(core, clock, [call(BOB)] + SCRIPTS["goodbye"][1:])
    finally:
        await core.close()
    config = _config(tmp_path, settings)
    out = tmp_path / "alice.json"
    assert await asyncio.to_thread(main, ["--config", str(config), "export", "--customer", "C001", "--actor", "sam",
                                          "-o", str(out)]) == 2
    assert await asyncio.to_thread(main, ["--config", str(config), "export", "--customer", "C001", "--actor", "ada",
                                          "-o", str(out)]) == 0
    bundle = json.loads(out.read_text())
    assert out.stat().st_mode & 0o777 == 0o600
    assert bundle["schema"] == "voicegw.subject-access/1" and bundle["numbers"] == [ALICE]
    assert [c["record"]["id"] for c in bundle["conversations"]] == [cid]
    assert [e["kind"] for e in bundle["conversations"][0]["events"]][:3] == ["CallStarted", "Say", "Ask"]
    assert "trust" not in bundle["conversations"][0]["record"]
    assert BOB not in out.read_text()
    audit = open_audit(settings)
    try:
        assert [e.actor for e in await audit.entries(limit=50) if e.action == "subject_access_export"] == ["ada"]
    finally:
        await audit.close()
