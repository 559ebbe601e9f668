"""QA on every ended conversation: the shipped scorecard over the seeded run of scripted
conversations through the real core (expectations per script worked out by hand), and logs a
broken build or a careless site could produce (account data before any proof, an unmasked card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.analytics.source import journey_map
from gateway.config import RedactionSettings
from gateway.context.sqlite_store import SqliteStore
from gateway.governance.qa_job import QaSweep
from gateway.governance.qa_store import SqliteQaStore
from gateway.governance.scorecards import load_scorecards
from tests.analytics.seed import ALICE, SCRIPTS, Clock, call, run_script, say, schedule, seeded_run, settings_for, \
    sqlite_core

ITEMS = ("automation_disclosed", "identity_before_account_data", "no_unredacted_pii", "resolved_or_clean_handoff",
         "timely_escalation", "courtesy_close")
# Per script, by hand, in the order of ITEMS (p pass, f fail, - not applicable).
EXPECTED = {
    "order_chat": "p-pp-p", "order_voice": "p-ppp" + "p", "silent": "p-pppp", "abandon": "p-pf--",
    "switch": "p-pp-p", "agent": "p-pp-p", "nomatch": "p-pppp", "bill": "pppp-p", "goodbye": "p-pf-p",
    "idle": "p-pf--", "angry": "p-pp-p",
}
SYMBOL = {"pass": "p", "fail": "f", "n/a": "-"}


@pytest.fixture
async def scored(tmp_path: Path) -> Any:
    clock = Clock()
    settings = settings_for(tmp_path)
    core = await sqlite_core(settings, clock)
    qa = SqliteQaStore(tmp_path / "qa.db")
    try:
        done = await seeded_run(core, clock, schedule())
        sweep = QaSweep(settings, core.store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                        journey_map(settings), clock=clock)
        yield done, sweep, qa, core, clock
    finally:
        await qa.close()
        await core.close()


async def test_every_ended_conversation_is_scored_as_worked_out_by_hand(scored: Any) -> None:
    done, sweep, qa, core, clock = scored
    assert await sweep.score_range(0, clock.now + 1) == 30  # the conversation still going is not scored
    for kind, cid, _ in done[:-1]:
        result = await qa.get(cid, "standard")
        assert result is not None, kind
        got = "".join(SYMBOL[next(i for i in result.items if i["id"] == item)["status"]] for item in ITEMS)
        assert got == EXPECTED[kind], (kind, got, result.items)
        assert result.passed == ("f" not in got), kind
    assert await qa.get(done[-1][1], "standard") is None
    abandon = await qa.get(next(cid for k, cid, _ in done if k == "abandon"), "standard")
    assert abandon is not None and abandon.score == pytest.approx(4 / 6)  # automation 1 + PII 3 of 1 + 3 + 2
    # a second sweep finds nothing new; a conversation that changes is scored again
    assert await sweep.score_range(0, clock.now + 1) == 0
    last = done[-1][1]
    clock.now += 3 * 3600
    assert await sweep.score_range(0, clock.now + 1) == 1  # the last one has ended by idleness now
    assert (await qa.get(last, "standard")).outcome == "abandoned"  # type: ignore[union-attr]


async def test_account_data_before_any_proof_and_an_unmasked_card_fail_critical_items(tmp_path: Path) -> None:
    """A log as a broken build would leave: the bill told on a chat that proved nothing, and a
    site that switched card masking off."""
    settings = settings_for(tmp_path)
    clock = Clock()
    store = SqliteStore(tmp_path / "c.db", clock=clock, redaction=RedactionSettings(card_numbers=False))
    qa = SqliteQaStore(tmp_path / "qa.db")
    try:
        record = await store.create(customer_id="C001", channel="chat")
        for channel, kind, payload in [
            ("chat", "ChatStarted", {}),
            ("bot", "Say", {"text": "Hi there! I'm the automated assistant.", "prompt_id": "greet"}),
            ("bot", "Ask", {"text": "How can I help you today?", "prompt_id": "how_help"}),
            ("chat", "ChatMessage", {"text": "my bill, card 4111 1111 1111 1111"}),
            ("bot", "Say", {"text": "Your latest bill is 99 dollars.", "prompt_id": "tell_bill"}),
            ("bot", "Ask", {"text": "What seems to be wrong with it?", "prompt_id": "ask_problem"}),
            ("chat", "ChannelClosed", {"reason": "closed"}),
        ]:
            clock.now += 1
            await store.append(record.id, channel=channel, kind=kind, payload=payload)
        sweep = QaSweep(settings, store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                        journey_map(settings), clock=clock)
        assert await sweep.score_range(0, clock.now + 1) == 1
        result = await qa.get(record.id, "standard")
        assert result is not None and not result.passed
        items = {i["id"]: i for i in result.items}
        assert items["identity_before_account_data"]["status"] == "fail"
        assert "event 5 (billing_dispute.tell_bill on chat)" in items["identity_before_account_data"]["detail"]
        assert items["no_unredacted_pii"]["status"] == "fail"
        assert items["no_unredacted_pii"]["detail"] == "unmasked secrets in events 4"
        assert "4111" not in str(result.as_dict())  # the evidence names events, never the secret
    finally:
        await qa.close()
        await store.close()


async def test_a_proof_on_another_channel_does_not_cover_this_one(tmp_path: Path) -> None:
    """Verified by phone, then the bill told in a chat of the same conversation that proved nothing:
    the proof belongs to the call."""
    settings = settings_for(tmp_path)
    clock = Clock()
    core = await sqlite_core(settings, clock)
    qa = SqliteQaStore(tmp_path / "qa.db")
    try:
        cid = await run_script(core, clock, [call(ALICE), say("there is a problem with my bill"), say("pin")])
        for digit in "4321":
            from gateway.core.events import DtmfPressed
            record = await core.store.get(cid)
            await core.handle(cid, DtmfPressed(digit), session_id=next(iter(record.trust.get("grants", {})), "")
                              or record.trust.get("last_session", ""))
        clock.now += 5
        await core.store.append(cid, channel="chat", kind="ChatMessage", payload={"text": "and my bill again?"})
        await core.store.append(cid, channel="bot", kind="Say", payload={"text": "It is 99 dollars.",
                                                                          "prompt_id": "tell_bill"})
        await core.store.append(cid, channel="chat", kind="ChannelClosed", payload={"reason": "closed"})
        sweep = QaSweep(settings, core.store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                        journey_map(settings), clock=clock)
        await sweep.score_range(0, clock.now + 1)
        items = {i["id"]: i for i in (await qa.get(cid, "standard")).items}  # type: ignore[union-attr]
        assert items["identity_before_account_data"]["status"] == "fail", items
        assert "on chat" in items["identity_before_account_data"]["detail"]
        assert "on voice" not in items["identity_before_account_data"]["detail"]
    finally:
        await qa.close()
        await core.close()


def test_a_bad_scorecard_is_reported_with_file_line_and_reason(tmp_path: Path) -> None:
    from gateway.core.journeys import JourneyError

    (tmp_path / "bad.yaml").write_text("scorecard: bad\nitems:\n  - id: x\n    check: no_such_check\n")
    with pytest.raises(JourneyError) as info:
        load_scorecards(tmp_path)
    assert "bad.yaml:4: items.0.check" in str(info.value)


def test_the_shipped_scorecards_load() -> None:
    cards = load_scorecards(Path(__file__).resolve().parents[2] / "config" / "scorecards")
    assert [c.scorecard for c in cards.cards] == ["standard"]
    assert {i.check for i in cards.cards[0].items} == {
        "automation_disclosed", "identity_before_disclosure", "no_unredacted_pii", "resolution_or_handoff",
        "escalation_within", "courtesy_close"}
    assert SCRIPTS  # the scripts the expectations above are about
