"""Smarter end of turn: a complete answer ends the turn sooner, a trailing "and" waits longer.

The call tests run real speech (the speech corpus, line noise in the pauses) through the real
recognizers and the real conversation core, on the simulator's virtual clock: the endpoint wait
is counted in audio frames, so the figures asserted are exact, not timings of this machine.
"""

from __future__ import annotations

import pytest

from gateway.config import load_settings
from gateway.core.actions import Expect
from gateway.voice.endpoint import EndpointConfig, Endpointer, SpeechEnded, SpeechPaused
from gateway.voice.pipeline import VoicePipeline
from gateway.voice.simulate import CallDriver, SimulatedControl
from gateway.voice.turn_end import COMPLETE, HOLD, IN_RANGE, SENTENCE, UNSURE, judge
from tests.voice.speech_corpus import utterance

RATE = 8000


def test_judge_closed_answers_by_what_the_question_expects():
    eight = Expect(kind="digits", min_digits=8, max_digits=8)
    assert judge("1 2 3 4 5 6 7 8", eight) == COMPLETE
    assert judge("one two three four five six seven eight.", eight) == COMPLETE
    assert judge("one two three four", eight) == UNSURE  # half an account number: the caller goes on
    # a range is never complete: a partial "one, zero, zero, zero" is heard as "10,000"
    assert judge("10,000", Expect(kind="digits", min_digits=5, max_digits=8)) == UNSURE
    assert judge("12345678", Expect(kind="digits", min_digits=5, max_digits=8)) == UNSURE
    assert judge("123", Expect(kind="digits", min_digits=5, max_digits=8)) == UNSURE
    assert judge("Yes, please.", Expect(kind="yesno")) == COMPLETE
    assert judge("Well, I", Expect(kind="yesno")) == UNSURE
    assert judge("PIN", Expect(kind="choice", options=("code", "pin"))) == COMPLETE
    assert judge("code or pin", Expect(kind="choice", options=("code", "pin"))) == UNSURE
    assert judge("March third.", Expect(kind="date")) == COMPLETE
    assert judge("March", Expect(kind="date")) == UNSURE


def test_judge_a_digit_string_of_a_range_of_lengths_on_the_grammars_count():
    order = Expect(kind="digits", min_digits=5, max_digits=8)
    # the grammar heard five digits and the chosen transcript agrees: it may be all, or not
    assert judge("10001", order, grammar_text="one zero zero zero one") == IN_RANGE
    assert judge("one zero zero zero one", order, grammar_text="one oh oh oh one") == IN_RANGE
    assert judge("12345678", order, grammar_text="one two three four five six seven eight") == COMPLETE
    # Whisper's "10,000" for a partial "one zero zero zero": the grammar's four words win
    assert judge("10,000", order, grammar_text="one zero zero zero") == UNSURE
    assert judge("10,000", order, grammar_text="one zero zero zero oh one") == UNSURE  # the counts differ
    assert judge("12345", order) == UNSURE  # written as a number that no grammar counted
    # digits written one by one are counted as they are, whatever the grammar made of them
    assert judge("1-0-0-0-1.", order, grammar_text="one zero zero one") == IN_RANGE
    assert judge("1-2-3-4-5", order) == IN_RANGE
    assert judge("100,001", order, grammar_text="one zero zero one") == UNSURE
    assert judge("1234", order, grammar_text="one two three four") == UNSURE  # short of the range
    assert judge("123456789", order, grammar_text="one two three four five six seven eight nine") == UNSURE
    # a fixed length is judged as before, with or without the grammar
    assert judge("123456", Expect(kind="digits", min_digits=6, max_digits=6), grammar_text="") == COMPLETE


def test_judge_open_speech_by_how_it_ends():
    open_ = Expect(kind="open")
    assert judge("I want to check the status of my order.", open_) == SENTENCE
    assert judge("I want to check the status of my order and", open_) == HOLD
    assert judge("I'm calling about, um", open_) == HOLD
    assert judge("So...", open_) == HOLD
    assert judge("my bill", open_) == UNSURE
    assert judge("", open_) == UNSURE


def _frames(prob: float, seconds: float) -> list[tuple[float, bytes]]:
    level = 3000 if prob > 0.5 else 30
    frame = (b"\x00\x00" * 80 + level.to_bytes(2, "little", signed=True) * 80)
    return [(prob, frame)] * int(seconds * 50)


def _run(ep: Endpointer, frames, on_pause=None) -> list:
    events = []
    for prob, frame in frames:
        for ev in ep.process(prob, frame):
            events.append(ev)
            if isinstance(ev, SpeechPaused) and on_pause is not None:
                on_pause(ev)
    return events


def test_endpointer_window_set_in_a_pause_and_restored_when_speech_resumes():
    cfg = EndpointConfig(end_of_turn_ms=600, speculative_ms=200)
    # shortened in the pause: the turn ends 300 ms after the speech instead of 600
    ep = Endpointer(cfg, RATE)
    events = _run(ep, _frames(0.0, 0.3) + _frames(0.9, 1.0) + _frames(0.0, 1.0),
                  on_pause=lambda ev: ep.set_window(ev.serial, 300, COMPLETE))
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 1 and ended[0].early == COMPLETE
    assert ep.frames * 0.02 >= 2.3  # all frames fed; the end came 300 ms after the speech
    # a decision that arrives after the caller went on does not apply
    ep = Endpointer(cfg, RATE)
    paused: list[SpeechPaused] = []
    events = _run(ep, _frames(0.9, 1.0) + _frames(0.0, 0.3), on_pause=paused.append)
    events += _run(ep, _frames(0.9, 0.5))
    assert not ep.set_window(paused[0].serial, 100, COMPLETE)
    events += _run(ep, _frames(0.0, 0.5))
    assert not any(isinstance(e, SpeechEnded) for e in events)  # 500 ms < the usual 600 ms window
    # lengthened: a 700 ms pause after a trailing "and" does not end the turn
    ep = Endpointer(cfg, RATE)
    events = _run(ep, _frames(0.9, 1.0) + _frames(0.0, 0.7) + _frames(0.9, 0.5) + _frames(0.0, 0.7),
                  on_pause=lambda ev: ep.set_window(ev.serial, 1000, HOLD))
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 0  # second pause of 700 ms: still inside the 1 s hold
    events = _run(ep, _frames(0.0, 0.4))
    assert [type(e) for e in events] == [SpeechEnded] and events[0].early == ""


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(overrides={"data_dir": str(tmp_path_factory.mktemp("turn-end"))})


async def _call(settings, journey: str, caller_id: str = "+15550111"):
    from gateway.app import build_core

    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    session = pipeline.session(call_id=f"te-{journey}", sample_rate=RATE, caller_id=caller_id,
                               control=SimulatedControl())
    session.journey = journey
    await session.start()
    driver = CallDriver(session)
    await driver.wait_for_bot(60)
    return core, pipeline, session, driver


async def _close(core, pipeline, session) -> None:
    await session.stop()
    await pipeline.close()
    await core.store.close()


@pytest.mark.slow
async def test_a_spoken_account_number_ends_when_all_eight_digits_are_heard(settings):
    core, pipeline, session, driver = await _call(settings, "verify_identity")
    try:
        assert session.expect.kind == "digits" and session.expect.max_digits == 8, session.transcript
        said = utterance("four five six one two three seven nine", snr_db=30, seed=41, lead_s=0.3, trail_s=1.0)
        await driver.feed(said.pcm)
        await driver.wait_for_bot(60)
        turn = session.turns[-1]
        assert turn.early == COMPLETE, (turn.as_dict(), session.transcript)
        assert turn.endpoint_wait < 0.4 < session.endpointer.config.end_of_turn_ms / 1000
        assert turn.speculative and session.speculative_discarded == 0  # one decode for the turn
        assert session.premature_cutins == 0
    finally:
        await _close(core, pipeline, session)


@pytest.mark.slow
async def test_an_order_number_of_five_to_eight_digits_ends_once_five_are_heard(settings):
    """A range of lengths: five digits may be all of it, so the turn ends after ``range_end_ms``
    rather than the full window (and a caller who goes on within it is still in the same turn)."""
    core, pipeline, session, driver = await _call(settings, "order_status", caller_id="+15550112")
    try:
        assert session.expect.kind == "digits" and session.expect.max_digits == 8, session.transcript
        cfg = session.endpointer.config
        said = utterance("one zero zero zero one", snr_db=30, seed=44, lead_s=0.3, trail_s=1.0)
        await driver.feed(said.pcm)
        await driver.wait_for_bot(60)
        turn = session.turns[-1]
        assert turn.early == IN_RANGE, (turn.as_dict(), session.transcript)
        assert cfg.complete_end_ms / 1000 < turn.endpoint_wait < (cfg.range_end_ms + 100) / 1000, turn.as_dict()
        assert turn.endpoint_wait < cfg.end_of_turn_ms / 1000
        assert "10001" in "".join(ch for ch in session.transcript[-2][1] if ch.isdigit()), session.transcript
    finally:
        await _close(core, pipeline, session)


@pytest.mark.slow
async def test_open_speech_ends_sooner_on_a_sentence_and_waits_through_a_trailing_and(settings):
    core, pipeline, session, driver = await _call(settings, "welcome")
    try:
        assert session.expect.kind == "open", session.transcript
        # "... my order and" + 0.75 s of line noise + "my bill": one turn, not two
        first = utterance("I want to check the status of my order and", snr_db=30, seed=42, lead_s=0.3,
                          trail_s=0.75)
        second = utterance("there is a wrong charge on my bill", snr_db=30, seed=43, lead_s=0.0, trail_s=1.2)
        await driver.feed(first.pcm + second.pcm)
        await driver.wait_for_bot(60)
        caller = [text for who, text in session.transcript if who == "caller"]
        assert len(caller) == 1 and "bill" in caller[0].lower() and "order" in caller[0].lower(), caller
        turn = session.turns[-1]
        assert turn.early == SENTENCE, (turn.as_dict(), session.speculative_discarded)
        assert turn.endpoint_wait < 0.55, turn.as_dict()
    finally:
        await _close(core, pipeline, session)
