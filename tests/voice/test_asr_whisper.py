"""Whisper through the worker pool and the router: real synthesized telephone speech, real model."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import AsyncIterator

import pytest

from gateway.config import AsrSettings, TtsSettings
from gateway.core.actions import Expect
from gateway.voice.asr import AsrError, AsrRouter
from gateway.voice.asr.base import Urgency, wer, word_errors
from gateway.voice.asr.grammar import spoken_digits
from gateway.voice.asr.pool import WhisperPool
from tests.voice.conftest import MODEL_DIR
from gateway.voice.asr.whisper import window_for
from gateway.voice.audio import resample
from gateway.voice.tts import Synthesizer
from tests.voice.speech_corpus import OPEN_SENTENCES, concatenate, utterance

pytestmark = pytest.mark.slow


@pytest.fixture
async def router(pool: WhisperPool) -> AsyncIterator[AsrRouter]:
    r = AsrRouter(AsrSettings(), whisper=pool, timeout_seconds=90.0)
    await r.start()
    yield r
    await r.close()


def test_window_policy() -> None:
    assert window_for(3.0, 10.0) == 10.0
    assert window_for(9.5, 10.0) == 30.0  # less than 1 s of room: the full window
    assert window_for(25.0, 10.0) == 30.0


async def test_open_sentences_recognized(router: AsrRouter) -> None:
    cases = [
        utterance(OPEN_SENTENCES[0]),
        utterance(OPEN_SENTENCES[1], voice="heart-low", snr_db=15),
        utterance(OPEN_SENTENCES[2], voice="heart-high", snr_db=10, noise_kind="pink"),
        utterance(OPEN_SENTENCES[3], speed=1.2),
        utterance(OPEN_SENTENCES[6], voice="heart-low", speed=0.9, snr_db=20),
        utterance(OPEN_SENTENCES[8], voice="heart-high"),
    ]
    results = await asyncio.gather(*(router.recognize(u.pcm, u.rate, Expect()) for u in cases))
    errors = words = good = 0
    for u, t in zip(cases, results):
        e, n = word_errors(u.text, t.text)
        errors, words = errors + e, words + n
        good += e / n <= 0.25
        assert t.engine == "whisper"
        assert t.audio_seconds == pytest.approx(len(u.pcm) / 2 / u.rate, abs=0.01)
        assert 0.0 < t.confidence <= 1.0 and t.decode_seconds > 0
    assert good >= len(cases) - 1, [(u.text, t.text) for u, t in zip(cases, results)]
    assert errors / words <= 0.15


async def test_queued_utterances_are_shared_out_not_batched_on_one_worker(pool: WhisperPool) -> None:
    """Four answers waiting at once: the first free worker takes two, the other one, the rest waits
    for whichever frees first (one worker taking all four would make every caller wait for four)."""
    cases = [utterance(OPEN_SENTENCES[k], rate=16000, telephone=False, ulaw=False) for k in range(4)]
    before = dict(pool.stats)
    with pool._cond:  # the workers see all four only once the last is queued
        futures = [pool.submit(u.pcm) for u in cases]
    results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    assert pool.stats["utterances"] - before["utterances"] == 4
    assert pool.stats["batches"] - before["batches"] == 3
    for u, (result, _queued) in zip(cases, results):
        assert wer(u.text, result.text) <= 0.25, (u.text, result.text)


async def test_a_hastened_speculative_decode_keeps_its_place_and_guesses_ride_no_urgent_batch() -> None:
    """One worker, busy. Queued behind it: a speculative decode made in a caller's pause (A), an
    ended turn (B), another speculative decode (C), another ended turn (D); then A's turn ends with
    only silence after the pause (``hasten``). A goes with B, made after it; D next, alone:
    a guess (C) never rides in an urgent batch, where it would make the callers waiting for D
    wait for its decode too; C last. Before, A stayed behind every ended turn, and C rode with D."""
    solo = WhisperPool(MODEL_DIR, workers=1, window_seconds=10.0, max_batch=2, decode_timeout=90.0)
    solo.start()
    try:
        long_turn = concatenate([utterance(s) for s in OPEN_SENTENCES[:4]], gap_s=1.0)
        busy = solo.submit(resample(long_turn, 8000, 16000))
        for _ in range(500):
            if busy.running():
                break
            await asyncio.sleep(0.01)
        assert busy.running()
        batches = solo.stats["batches"]
        pcm = {k: resample(utterance(OPEN_SENTENCES[i]).pcm, 8000, 16000) for k, i in zip("ABCD", (4, 5, 6, 7))}
        spoken = Urgency(False)
        submitted, futures = {}, {}
        for key, urgent in (("A", spoken), ("B", True), ("C", False), ("D", True)):
            submitted[key] = time.perf_counter()
            futures[key] = solo.submit(pcm[key], urgent=urgent)
        spoken.hasten()
        assert not busy.done(), "the worker came free before every request was queued"
        done = {k: await asyncio.wait_for(asyncio.wrap_future(f), 120) for k, f in futures.items()}
        started = {k: submitted[k] + done[k][1] for k in done}
        assert abs(started["A"] - started["B"]) < 0.05, started  # one batch
        assert started["B"] < started["D"] < started["C"], started
        assert solo.stats["batches"] - batches == 4  # the long turn, A+B, D, C
        for key, i in zip("ABCD", (4, 5, 6, 7)):
            assert wer(OPEN_SENTENCES[i], done[key][0].text) <= 0.25, (key, done[key][0].text)
    finally:
        solo.close()


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def test_a_worker_spends_the_cores_it_is_given_and_no_more(pool: WhisperPool) -> None:
    """Each worker decodes on ``threads`` threads. numpy's OpenBLAS, left to itself, ran the mel
    filters' product on a thread per core and kept them spinning afterwards: a one-thread worker
    spent 1.8 s of CPU per second of decoding, taking the other worker's core."""
    threads = pool._config["threads"]
    cases = [resample(utterance(OPEN_SENTENCES[k]).pcm, 8000, 16000) for k in range(6)]
    await asyncio.wrap_future(pool.submit(cases[0]))  # warm
    await asyncio.sleep(0.5)
    before, decoding = _cpu_seconds(pool.worker_pids()), 0.0
    for pcm in cases:  # one at a time: one worker decodes, the other is idle
        result, _queued = await asyncio.wrap_future(pool.submit(pcm))
        decoding += result.decode_seconds
    await asyncio.sleep(0.5)  # spinning threads would go on after the decode
    spent = _cpu_seconds(pool.worker_pids()) - before
    assert spent <= (threads + 0.3) * decoding, (spent, decoding, threads)


async def test_an_utterance_no_worker_has_taken_yet_is_not_a_busy_pool(pool: WhisperPool) -> None:
    """Between ``submit`` and an idle worker's thread taking it an utterance is pending; the pool
    is not saturated then (the router would drop an idle gateway's cross-check, and calls their
    speculative decodes). With one worker busy and one waiting it is (test_asr_cross_check)."""
    u = utterance(OPEN_SENTENCES[0], rate=16000, telephone=False, ulaw=False)
    with pool._cond:  # no worker thread can take it while this is held
        future = pool.submit(u.pcm)
        assert pool._pending and not pool.saturated
    result, _queued = await asyncio.wrap_future(future)
    assert wer(u.text, result.text) <= 0.25, (u.text, result.text)


async def test_a_digits_hint_writes_order_numbers_digit_by_digit(pool: WhisperPool) -> None:
    """Without the hint Whisper writes "four, zero, zero, zero, two" as "400002" (a zero too many)
    or the like; with it, one digit at a time and right. Other speech stays words."""
    async def heard(text: str, hint: str, voice: str = "heart") -> str:
        u = utterance(text, voice=voice, rate=8000, snr_db=30.0)
        result, _queued = await asyncio.wrap_future(pool.submit(resample(u.pcm, 8000, 16000), hint=hint))
        return result.text

    plain = [await heard("four, zero, zero, zero, two", ""), await heard("two, zero, zero, zero, one", "")]
    assert [spoken_digits(t) for t in plain] != ["40002", "20001"], plain  # what the hint is for
    for text, digits in (("four, zero, zero, zero, two", "40002"), ("two, zero, zero, zero, one", "20001"),
                         ("one oh two three", "1023")):
        for voice in ("heart", "heart-low"):
            said = await heard(text, "digits", voice)
            assert spoken_digits(said) == digits, (text, voice, said)
    agent = await heard("I want to speak to an agent", "digits")
    assert "agent" in agent.lower() and not spoken_digits(agent), agent


async def test_wideband_input_and_short_window(pool: WhisperPool) -> None:
    u = utterance("please cancel my subscription", rate=16000, telephone=False, ulaw=False)
    result, queue_seconds = await asyncio.wrap_future(pool.submit(u.pcm))
    assert result.window_seconds == 10.0  # 1000 mel frames, not the padded 3000
    assert wer(u.text, result.text) <= 0.25
    assert queue_seconds >= 0


async def test_utterance_longer_than_the_window(router: AsrRouter) -> None:
    parts = [utterance(s, lead_s=0.2, trail_s=0.2) for s in OPEN_SENTENCES[:4]]
    pcm = concatenate(parts, gap_s=1.0)
    assert len(pcm) / 16000 > 10.0
    t = await router.recognize(pcm, 8000, Expect())
    reference = " ".join(p.text for p in parts)
    assert wer(reference, t.text) <= 0.2, t.text


async def test_closed_set_falls_back_to_whisper_when_the_grammar_cannot_fit(
    pool: WhisperPool, caplog: pytest.LogCaptureFixture
) -> None:
    # Without the cross-check: eight digits expected, three spoken: the grammar cannot end on a
    # full answer, Whisper is asked.
    router = AsrRouter(AsrSettings(cross_check=False), whisper=pool, timeout_seconds=90.0)
    await router.start()
    # Whisper is one engine among the others: the open one here, and the closed sets' checker
    assert router.engines["whisper"] is router.open is router.checker and router.closed is not router.checker
    caplog.set_level(logging.INFO, logger="gateway.voice.asr")
    u = utterance("three three seven")
    expect = Expect(kind="digits", min_digits=8, max_digits=8, sensitive=True)
    try:
        t = await router.recognize(u.pcm, 8000, expect)
    finally:
        await router.close()
    assert t.engine == "whisper"
    assert spoken_digits(t.text) == "337"
    assert router.stats["fallbacks"] == 1 and router.stats["cross_checks"] == 0
    assert "asking whisper" in caplog.text and "three" not in caplog.text  # a PIN never reaches the log


async def test_tts_prompts_are_intelligible(router: AsrRouter, tmp_path: Path) -> None:
    synth = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    prompts = [
        "Thanks for calling. How can I help you today?",
        "Please say or key in your eight digit account number.",
        "Your order has shipped and arrives on Friday.",
    ]
    errors = words = 0
    for text in prompts:
        pcm = await synth.synthesize(text, 8000)
        t = await router.recognize(pcm, 8000, Expect())
        e, n = word_errors(text, t.text)
        errors, words = errors + e, words + n
    assert errors / words <= 0.1
    await synth.close()


async def test_ten_minute_monologue_is_refused_quickly(router: AsrRouter) -> None:
    speech = utterance(OPEN_SENTENCES[0]).pcm
    pcm = speech * int(600 * 16000 / len(speech) + 1)
    start = time.perf_counter()
    with pytest.raises(AsrError, match="longer than the 60 s limit"):
        await router.recognize(pcm, 8000, Expect())
    assert time.perf_counter() - start < 5.0


async def test_silence_gives_an_empty_or_short_answer(router: AsrRouter) -> None:
    t = await router.recognize(b"\x00\x00" * 16000, 8000, Expect())
    assert len(t.text.split()) <= 2


async def test_timeout_is_an_asr_error(pool: WhisperPool) -> None:
    hasty = AsrRouter(AsrSettings(), whisper=pool, timeout_seconds=0.001)
    await hasty.start()
    with pytest.raises(AsrError, match="no result within"):
        await hasty.recognize(utterance(OPEN_SENTENCES[4]).pcm, 8000, Expect())
    await hasty.close()


async def test_crashed_worker_is_replaced_and_its_request_retried(router: AsrRouter, pool: WhisperPool) -> None:
    parts = [utterance(s) for s in OPEN_SENTENCES[:3]]
    restarts = pool.stats["restarts"]
    task = asyncio.ensure_future(router.recognize(concatenate(parts, gap_s=0.5), 8000, Expect()))
    await _kill_workers_while_decoding(pool)
    t = await asyncio.wait_for(task, 120)
    assert wer(" ".join(p.text for p in parts), t.text) <= 0.2  # decoded again by a fresh worker
    assert pool.stats["restarts"] > restarts
    u = utterance(OPEN_SENTENCES[5])
    t = await router.recognize(u.pcm, 8000, Expect())
    assert wer(u.text, t.text) <= 0.35


async def _kill_workers_while_decoding(pool: WhisperPool) -> None:
    for _ in range(500):  # until the request has reached a worker
        if pool.decoding:
            break
        await asyncio.sleep(0.01)
    assert pool.decoding, "the utterance never reached a Whisper worker"
    for pid in pool.worker_pids():
        os.kill(pid, signal.SIGKILL)


async def test_overrunning_worker_is_an_asr_error_and_restarted() -> None:
    hasty = WhisperPool(MODEL_DIR, workers=1, window_seconds=10.0, decode_timeout=0.05)
    hasty.start()
    try:
        u = utterance(OPEN_SENTENCES[0])
        with pytest.raises(AsrError, match="overran"):
            await asyncio.wait_for(asyncio.wrap_future(hasty.submit(resample(u.pcm, 8000, 16000))), 120)
        assert hasty.stats["restarts"] == 1
    finally:
        hasty.close()


async def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "whisper-base"
    router = AsrRouter(AsrSettings(whisper_model_dir=str(missing)))
    with pytest.raises(AsrError) as info:
        await router.start()
    assert str(missing) in str(info.value)
    assert "python -m gateway.voice.model_install" in str(info.value)
    await router.close()
