"""Closed-set turns decoded by the grammar and by Whisper at once (``voice.asr.cross_check``)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import AsrSettings
from gateway.core.actions import Expect
from gateway.voice.asr import AsrRouter
from gateway.voice.asr.grammar import answer_of, out_of_grammar, prefer_open_engine, spoken_digits, yes_no_meaning
from gateway.voice.asr.pool import WhisperPool
from gateway.voice.asr.router import whisper_fits
from tests.voice.conftest import MODEL_DIR
from gateway.voice.audio import resample
from tests.voice.speech_corpus import DIGIT_STRINGS, OPEN_SENTENCES, YES_NO, concatenate, utterance

VOICES = ("heart", "heart-low", "heart-high")


def digits(low: int, high: int) -> Expect:
    return Expect(kind="digits", min_digits=low, max_digits=high)


def test_whisper_wins_when_it_fits_the_question() -> None:
    # Whisper heard the digits the grammar got wrong.
    assert prefer_open_engine("four five eight one two", "4-5-6-1-2.", digits(5, 5))
    # Whisper writes "oh" as nothing: fewer digits than asked for, or fewer than the grammar heard
    # with an "oh" among them.
    assert not prefer_open_engine("one oh two three", "103.", digits(4, 4))
    assert not prefer_open_engine("eight two zero oh one", "8201", digits(4, 8))
    # Written as a number, a run of zeros is miscounted: the grammar heard each zero as a word.
    assert not prefer_open_engine("one zero zero zero one", "100001.", digits(5, 8))
    assert not prefer_open_engine("two zero zero five", "205", digits(3, 8))
    assert prefer_open_engine("one zero zero one", "10001", digits(4, 8)) is False
    assert prefer_open_engine("one zero zero one", "1011", digits(4, 8))  # another digit: Whisper's
    # Heard in the order-number benches (5 to 8 digits, line noise): Whisper writing each digit
    # apart counts the zeros right, and digits the grammar did not hear are no dropped "oh".
    assert prefer_open_engine("eight zero oh zero zero two", "6-0-0-0-2.", digits(5, 8))
    assert prefer_open_engine("one zero zero zero zero zero one", "1-0-0-0-1.", digits(5, 8))
    assert prefer_open_engine("three five five oh one oh nine two", "357192.", digits(5, 8))
    assert prefer_open_engine("eight one zero four four two", "8-10-0-4-4-2.", digits(5, 8))
    # Taken alone while the grammar is queued: any count in range, but never a run of zeros
    assert whisper_fits("4-5-6-1-2.", digits(5, 8), loose=True) and not whisper_fits("4-5-6-1-2.", digits(5, 8))
    assert not whisper_fits("100001.", digits(5, 8), loose=True)
    assert whisper_fits("1-0-0-0-1.", digits(5, 8), loose=True)  # written digit by digit: counted right
    # Neither fits: Whisper's words go on to the core (the NLU asks again).
    assert prefer_open_engine("", "I don't know it", digits(8, 8))
    assert prefer_open_engine("yes", "No, it isn't.", Expect(kind="yesno"))
    # Speech that answers nothing is Whisper's to report, whatever the grammar forced it into:
    # the core then asks again (or hears the agent request) instead of taking a made-up answer.
    assert prefer_open_engine("no", "Hello", Expect(kind="yesno"))
    assert prefer_open_engine("nine one eight eight one eight eight", "I want to speak to an agent.", digits(5, 8))
    assert prefer_open_engine("yes", "There's a wrong charge on my bill.", Expect(kind="yesno"))
    assert prefer_open_engine("yeah", "Agent", Expect(kind="yesno"))
    # but one stray word beside an answer word is no other sentence
    assert not out_of_grammar("Yes, ma'am", Expect(kind="yesno"))
    options = Expect(kind="choice", options=("billing", "sales"))
    assert prefer_open_engine("sales", "Billing, please.", options)
    assert not prefer_open_engine("sales", "billing or sales", options)  # two options named


def test_answers_are_compared_by_meaning() -> None:
    assert answer_of("4-5-6", digits(3, 3)) == answer_of("four five six", digits(3, 3)) == "456"
    assert yes_no_meaning("Yes, that's right.") == "yes" and yes_no_meaning("Nope.") == "no"
    assert yes_no_meaning("nobody knows") == "" and yes_no_meaning("") == ""
    assert answer_of("the billing please", Expect(kind="choice", options=("billing", "sales"))) == "billing"


async def _router(pool: WhisperPool, **settings: object) -> AsrRouter:
    router = AsrRouter(AsrSettings(**settings), whisper=pool, timeout_seconds=90.0)
    await router.start()
    return router


@pytest.mark.slow
async def test_narrowband_closed_sets_are_at_least_as_right_as_the_grammar_alone(pool: WhisperPool) -> None:
    """8 kHz telephone audio, three voices: digit strings and yes/no answers through the router
    with and without the cross-check (generous wait, so every turn is cross-checked)."""
    both = await _router(pool, cross_check=True, cross_check_wait_ms=10000)
    grammar = await _router(pool, cross_check=False)
    grammar.fallback = False
    right = {"both": [0, 0], "grammar": [0, 0]}
    try:
        for voice in VOICES:
            for text, answer in DIGIT_STRINGS:
                u = utterance(text, voice=voice)
                expect = digits(len(answer), len(answer))
                right["both"][0] += spoken_digits((await both.recognize(u.pcm, 8000, expect)).text) == answer
                right["grammar"][0] += spoken_digits((await grammar.recognize(u.pcm, 8000, expect)).text) == answer
            for text, answer in YES_NO:
                u = utterance(text, voice=voice)
                expect = Expect(kind="yesno")
                right["both"][1] += yes_no_meaning((await both.recognize(u.pcm, 8000, expect)).text) == answer
                right["grammar"][1] += yes_no_meaning((await grammar.recognize(u.pcm, 8000, expect)).text) == answer
    finally:
        await both.close()
        await grammar.close()
    n_digits, n_yes = len(VOICES) * len(DIGIT_STRINGS), len(VOICES) * len(YES_NO)
    assert both.stats["cross_checks"] == n_digits + n_yes and both.stats["cross_check_late"] == 0
    assert right["both"][0] >= right["grammar"][0] and right["both"][1] >= right["grammar"][1], right
    assert right["both"][0] >= n_digits - 3 and right["both"][1] >= n_yes - 1, right


@pytest.mark.slow
async def test_a_busy_whisper_does_not_hold_up_a_closed_answer() -> None:
    """One Whisper worker, busy with a long utterance: the grammar's answer is taken once the
    wait is over, and the queued Whisper request is dropped before it reaches the worker."""
    solo = WhisperPool(MODEL_DIR, workers=1, window_seconds=10.0, decode_timeout=90.0)
    solo.start()
    router = await _router(solo, cross_check=True, cross_check_wait_ms=0)
    try:
        long_turn = concatenate([utterance(s) for s in OPEN_SENTENCES], gap_s=1.0)  # ~40 s: busy > 1 s
        busy = solo.submit(resample(long_turn, 8000, 16000))
        u = utterance("yes")
        # A request behind the busy worker is "waiting" (a whole decode away); taken, it is not.
        queued = asyncio.ensure_future(router.whisper.recognize(u.pcm, 8000, Expect(kind="yesno")))
        for _ in range(200):
            if solo.saturated:
                break
            await asyncio.sleep(0.01)
        assert router.whisper.waiting(queued)
        queued.cancel()
        t = await router.recognize(u.pcm, 8000, Expect(kind="yesno"))
        assert t.engine == "pocketsphinx" and yes_no_meaning(t.text) == "yes", t
        assert router.stats["cross_check_late"] == 1
        # However long the usual wait, a grammar answer does not wait on a Whisper whose workers
        # are all busy while utterances queue (cross_check_busy_wait_ms, 0 by default).
        router.cross_check_wait = 60.0
        t = await asyncio.wait_for(router.recognize(u.pcm, 8000, Expect(kind="yesno")), 5.0)
        assert t.engine == "pocketsphinx" and yes_no_meaning(t.text) == "yes", t
        assert router.stats["cross_check_late"] == 2 and router.stats["cross_check_busy"] == 2
        # A turn dropped while its cross-check waits (the caller went on speaking) takes its
        # queued Whisper request with it.
        router.cross_check_busy_wait = 60.0
        dropped = asyncio.ensure_future(router.recognize(u.pcm, 8000, Expect(kind="yesno")))
        while router.stats["cross_checks"] < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the grammar has answered; the turn waits on Whisper
        assert not dropped.done()
        dropped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dropped
        await asyncio.wait_for(asyncio.wrap_future(busy), 90)  # the loop runs on meanwhile
        await asyncio.sleep(0.5)
        assert solo.stats["utterances"] == 1  # no cross-check reached the worker
        # A digit string waits for its check, busy or not (cross_check_digits_wait_ms): the grammar
        # hears few order numbers right, and a wrong one costs the caller a re-ask.
        router.cross_check_busy_wait, router.cross_check_digits_wait = 0.0, 60.0  # 60: however slow this machine
        busy = solo.submit(resample(long_turn, 8000, 16000))
        d = utterance("four five six one two")
        t = await asyncio.wait_for(router.recognize(d.pcm, 8000, digits(5, 5)), 90)
        assert t.engine == "whisper" and spoken_digits(t.text) == "45612", t
        assert busy.done() and router.stats["cross_check_late"] == 2
    finally:
        await router.close()
        solo.close()


@pytest.mark.slow
async def test_one_calls_digits_do_not_wait_behind_anothers_grammar_decode(pool: WhisperPool) -> None:
    """With every closed-set worker busy (a pool of one, a 24-digit grammar over 12 s of speech),
    a long decode for one call must not hold another call's account number, which Whisper heard
    in full. Ordering, not timing: the second answer comes while the first still decodes."""
    router = await _router(pool, cross_check=True, cross_check_wait_ms=300, closed_workers=1, closed_streaming=False)
    try:
        long_pcm = concatenate([utterance(w, seed=60 + i) for i, (w, _d) in enumerate(DIGIT_STRINGS)])
        blocker = asyncio.ensure_future(router.engines["pocketsphinx"].recognize(long_pcm, 8000, digits(1, 24)))
        await asyncio.sleep(0.05)  # the grammar engine has taken the long request
        account = utterance("four five six one two three seven nine", snr_db=30, seed=41)
        heard = await router.recognize(account.pcm, account.rate, digits(8, 8))
        assert not blocker.done(), "the long decode finished first: nothing was shown"
        assert heard.engine == "whisper" and spoken_digits(heard.text) == "45612379", heard
        assert router.stats["whisper_first"] == 1
        # a range (an order number of 5 to 8 digits): Whisper's answer stands only while the grammar
        # is queued behind other calls (it would hide a spoken "oh" that Whisper drops)
        order = utterance("four five six one two", snr_db=30, seed=42)
        heard = await router.recognize(order.pcm, order.rate, digits(5, 8))
        assert not blocker.done(), "the long decode finished first: nothing was shown"
        assert heard.engine == "whisper" and spoken_digits(heard.text) == "45612", heard
        assert heard.grammar_text is None  # no word count to end the turn early on (turn_end.judge)
        await blocker
    finally:
        await router.close()


@pytest.mark.slow
async def test_with_two_closed_set_workers_the_grammar_answers_beside_a_long_decode(pool: WhisperPool) -> None:
    """Two closed-set workers: while one decodes another call's long request, the grammar takes
    this call's digits on the other worker at once (not queued: Whisper is not taken loosely)."""
    router = await _router(pool, cross_check=True, cross_check_wait_ms=300, closed_workers=2, closed_streaming=False)
    try:
        long_pcm = concatenate([utterance(w, seed=60 + i) for i, (w, _d) in enumerate(DIGIT_STRINGS)])
        blocker = asyncio.ensure_future(router.engines["pocketsphinx"].recognize(long_pcm, 8000, digits(1, 24)))
        await asyncio.sleep(0.05)  # one worker has taken the long request
        assert not router._grammar_queued()
        order = utterance("four five six one two", snr_db=30, seed=42)
        heard = await router.recognize(order.pcm, order.rate, digits(5, 8))
        assert not blocker.done(), "the long decode finished first: nothing was shown"
        assert spoken_digits(heard.text) == "45612", heard
        assert router.stats["whisper_first"] == 0  # the grammar answered first, on the free worker
        assert len(spoken_digits(heard.grammar_text or "")) == 5, heard  # its words come along
        await blocker
    finally:
        await router.close()
