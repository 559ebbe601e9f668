"""Journey analytics from the event log, on a seeded run of 31 scripted conversations through the
real conversation core, checked against numbers worked out by hand from each script (the FACTS
below were written by reading the journeys, not by running the analytics), on SQLite and Redis."""

from __future__ import annotations

import csv
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from gateway.analytics.report import DAY, Report, ReportFilter
from gateway.analytics.source import Analytics
from gateway.app import build_core
from gateway.context.redis_store import RedisStore
from tests.analytics.seed import GAP_SECONDS, STAGES, T0, Clock, schedule, seeded_run, settings_for, sqlite_core
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)

# Per script, by hand: outcome, tasks (journey -> state), customer turns, channels, channel switches,
# the question left open when it ended without resolution, and utterance frustration scores
# (gateway.core.nlu.frustration: "ridiculous" 0.55 and "third time" 0.5 give 1 - 0.45 * 0.5 = 0.775;
# "nonsense" 0.45).
FACTS: dict[str, dict[str, Any]] = {
    "order_chat": dict(outcome="completed", tasks={"order_status": "completed"}, turns=4, channels=["chat"],
                       utterances=[0, 0, 0, 0]),
    "order_voice": dict(outcome="completed", tasks={"order_status": "completed"}, turns=5, channels=["voice"],
                        utterances=[0, 0, 0, 0]),
    "silent": dict(outcome="transferred", tasks={}, turns=3, channels=["voice"], utterances=[],
                   transfer=("repeated no-input", "support")),
    "abandon": dict(outcome="abandoned", tasks={"order_status": "abandoned"}, turns=1, channels=["chat"],
                    utterances=[0], left="ask_order"),
    "switch": dict(outcome="completed", tasks={"order_status": "completed"}, turns=4, channels=["chat", "voice"],
                   switches=1, utterances=[0, 0, 0]),
    "agent": dict(outcome="transferred", tasks={}, turns=1, channels=["chat"], utterances=[0],
                  transfer=("customer asked for an agent", "support")),
    "nomatch": dict(outcome="transferred", tasks={}, turns=3, channels=["voice"], utterances=[0, 0, 0.45],
                    transfer=("repeated no-match", "support")),
    "bill": dict(outcome="completed", tasks={"billing_dispute": "completed"}, turns=6, channels=["voice"],
                 utterances=[0, 0, 0, 0, 0], customer="C001"),
    "goodbye": dict(outcome="abandoned", tasks={}, turns=1, channels=["chat"], utterances=[0]),
    "idle": dict(outcome="abandoned", tasks={"order_status": "abandoned"}, turns=1, channels=["chat"],
                 utterances=[0], left="ask_order"),
    "angry": dict(outcome="completed", tasks={"order_status": "completed"}, turns=4, channels=["chat"],
                  utterances=[0.775, 0, 0, 0]),
}


class Run:
    def __init__(self, analytics: Analytics, done: list[tuple[str, str, float]], clock: Clock) -> None:
        self.analytics, self.done, self.clock = analytics, done, clock

    async def report(self, **kw: Any) -> Report:
        since = kw.pop("since", T0 - 1)
        until = kw.pop("until", self.clock.now + 1)
        return await self.analytics.report(ReportFilter(since, until, **kw))


@pytest.fixture(params=["sqlite", "redis"])
async def run(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Run]:
    clock = Clock()
    if request.param == "sqlite":
        settings = settings_for(tmp_path)
        core = await sqlite_core(settings, clock)
    else:
        url = request.getfixturevalue("redis_url")
        settings = settings_for(tmp_path, context={"backend": "redis", "redis_url": url})
        store = RedisStore(url, prefix=f"a{uuid.uuid4().hex[:6]}:", clock=clock)
        core = await build_core(settings, store=store)
        core.clock = clock
    try:
        done = await seeded_run(core, clock, schedule())
        yield Run(Analytics(settings, core.store, clock=clock), done, clock)
    finally:
        await core.close()


def _kinds(run: Run, since: float = 0.0) -> list[str]:
    return [kind for kind, _, start in run.done if start >= since]


async def test_outcomes_and_rates_match_the_hand_count(run: Run) -> None:
    kinds = _kinds(run)
    assert len(kinds) == 31 and Counter(kinds)["idle"] == 3
    h = (await run.report()).headline
    # 30 ended: completed = order_chat 5 + order_voice 4 + switch 2 + bill 4 + angry 2 = 17;
    # transferred = silent 2 + agent 2 + nomatch 2 = 6; abandoned = abandon 3 + goodbye 2 + idle 2 = 7;
    # the last idle conversation is still going (its last event is now)
    assert (h["conversations"], h["ended"], h["active"]) == (31, 30, 1)
    assert (h["completed"], h["transferred"], h["abandoned"]) == (17, 6, 7)
    assert h["containment"] == pytest.approx(24 / 30) and h["transfer_rate"] == pytest.approx(6 / 30)
    assert h["abandonment"] == pytest.approx(7 / 30)
    # turns: 5*4 + 4*5 + 2*3 + 3*1 + 2*4 + 2*1 + 2*3 + 4*6 + 2*1 + 3*1 + 2*4 = 102 over 31
    assert h["turns_per_conversation"] == pytest.approx(102 / 31)
    assert h["frustrated"] == pytest.approx(2 / 31)  # the two angry ones (0.775); 0.45 is under 0.5


async def test_repeat_contacts_and_first_contact_resolution(run: Run) -> None:
    bills = [start for kind, _, start in run.done if kind == "bill"]
    # each of Alice's calls lasts 7 moves of 5 s; another call of hers within 7 days of its end is a repeat
    repeats = sum(1 for s in bills if any(s < t <= s + 35 + 7 * DAY for t in bills))
    assert 0 < repeats < len(bills)  # the seeded schedule has both kinds
    h = (await run.report()).headline
    assert h["repeat_contacts"] == repeats
    assert h["first_contact_resolution"] == pytest.approx((len(bills) - repeats) / len(bills))


async def test_transfers_by_reason(run: Run) -> None:
    rows = (await run.report()).table("transfers").as_dicts()
    assert {(r["reason"], r["queue"], r["conversations"]) for r in rows} == {
        ("repeated no-input", "support", 2), ("customer asked for an agent", "support", 2),
        ("repeated no-match", "support", 2)}
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


async def test_task_completion_channel_switches_and_funnel(run: Run) -> None:
    report = await run.report()
    journeys = {r["journey"]: r for r in report.table("journeys").as_dicts()}
    order = journeys["order_status"]
    # order_status: 5 + 4 + 3 + 2 + 3 (idle, one still going) + 2 = 19; completed 5 + 4 + 2 + 2 = 13;
    # abandoned 3 + 2 = 5, one active: completion 13 of the 18 that ended
    assert (order["conversations"], order["entered"], order["completed"], order["abandoned"]) == (19, 19, 13, 5)
    assert order["completion"] == pytest.approx(13 / 18)
    assert (order["with_channel_switch"], order["channel_switches"]) == (2, 2)
    bill = journeys["billing_dispute"]
    assert (bill["entered"], bill["completed"], bill["completion"]) == (4, 4, 1.0)
    funnel = {(r["journey"], r["step"]): r for r in report.table("funnel").as_dicts()}
    assert (funnel[("order_status", "ask_order")]["reached"], funnel[("order_status", "ask_order")]["ended_here"]) \
        == (19, 5)
    assert funnel[("order_status", "offer_sms")]["reached"] == 13
    assert funnel[("verify_identity", "ask_secret")]["reached"] == 4
    assert [r["step"] for r in report.table("funnel").as_dicts() if r["journey"] == "billing_dispute"] == [
        "ask_problem", "confirm_dispute"]  # file order; offer_agent was never reached


async def test_effort_and_recognition_per_step(run: Run) -> None:
    steps = {(r["journey"], r["step"]): r for r in (await run.report()).table("steps").as_dicts()}
    ask_order = steps[("order_status", "ask_order")]
    # asked: order_chat 5 + order_voice 2*4 + abandon 3 + switch 2*2 (chat, then again on the call) + idle 3
    # + angry 2 = 25; each order_voice call re-asked it once after "blah" (0.3) and got the keys
    assert (ask_order["asks"], ask_order["re_asks"], ask_order["no_match"], ask_order["no_input"]) == (25, 4, 4, 0)
    assert ask_order["keypad_fallbacks"] == 4  # the switch calls keyed it without speaking first: not fallbacks
    assert ask_order["confidence_mean"] == pytest.approx(0.3) and ask_order["low_confidence"] == 1.0
    how_help = steps[("welcome", "how_help")]
    # silent: 2 retries + the escalation each; nomatch likewise
    assert (how_help["no_input"], how_help["no_match"], how_help["re_asks"]) == (6, 6, 8)
    assert how_help["asks"] == 31 + 2 * 2 + 2 * 2


async def test_latency_from_the_log_and_from_stage_events(run: Run) -> None:
    rows = {r["stage"]: r for r in (await run.report()).table("latency").as_dicts()}
    assert rows["core"]["samples"] == 102  # every turn of the run got an answer
    assert rows["recognition"]["samples"] == 4 and rows["recognition"]["p95"] == pytest.approx(STAGES["recognition"])
    assert rows["total"]["p50"] == pytest.approx(STAGES["total"])


async def test_frustration_trend(run: Run) -> None:
    rows = (await run.report()).table("frustration").as_dicts()
    scores = [s for kind in _kinds(run) for s in FACTS[kind]["utterances"]]
    assert sum(r["utterances"] for r in rows) == len(scores)
    assert sum(r["frustrated_conversations"] for r in rows) == 2
    total = sum(r["frustration_mean"] * r["utterances"] for r in rows)
    assert total == pytest.approx(sum(scores))
    assert all(r["from"].endswith("T00:00+00:00") for r in rows)  # ten days: one row per day


async def test_filters_by_journey_channel_queue_and_time(run: Run) -> None:
    by_journey = (await run.report(journey="order_status")).headline
    assert by_journey["conversations"] == 19 and by_journey["completed"] == 13
    by_channel = (await run.report(channel="voice")).headline
    # order_voice 4 + silent 2 + switch 2 + nomatch 2 + bill 4
    assert by_channel["conversations"] == 14 and by_channel["transferred"] == 4
    by_queue = (await run.report(queue="support")).headline
    assert by_queue["conversations"] == 6 and by_queue["transfer_rate"] == 1.0
    since = T0 + 20 * GAP_SECONDS
    tail = (await run.report(since=since)).headline
    kinds = _kinds(run, since)
    assert tail["conversations"] == len(kinds)
    assert tail["completed"] == sum(1 for k in kinds[:-1] if FACTS[k]["outcome"] == "completed")


async def test_report_cli_prints_and_exports_csv_and_parquet(run: Run, tmp_path: Path, capsys: Any) -> None:
    import pyarrow.parquet as pq

    from gateway.analytics.cli import _report
    from gateway.analytics.tables import export

    report = await run.report()
    export(report.tables, tmp_path / "csv", "csv")
    export(report.tables, tmp_path / "pq", "parquet")
    with open(tmp_path / "csv" / "transfers.csv", newline="") as fh:
        assert sorted(int(r["conversations"]) for r in csv.DictReader(fh)) == [2, 2, 2]
    table = pq.read_table(tmp_path / "pq" / "journeys.parquet").to_pylist()
    order = next(r for r in table if r["journey"] == "order_status")
    assert order["completed"] == 13 and order["completion"] == pytest.approx(13 / 18)
    assert str(pq.read_schema(tmp_path / "pq" / "journeys.parquet").field("completed").type) == "int64"
    if run.analytics.settings.context.backend != "sqlite":
        return
    # the command itself, on the same data directory and a range covering the run
    import argparse

    config = tmp_path / "site.yaml"
    config.write_text(f"data_dir: {run.analytics.settings.data_dir}\n", encoding="utf-8")
    args = argparse.Namespace(config=str(config), since=str(T0 - 1), until=str(run.clock.now + 1), journey="",
                              channel="", queue="", csv=None, parquet=str(tmp_path / "cli"), json=True)
    assert await _report(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["headline"]["completed"] == 17 and printed["headline"]["active"] == 0  # its clock is later
    assert (tmp_path / "cli" / "funnel.parquet").exists()
