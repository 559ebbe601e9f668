"""Backchannels do not interrupt: "uh-huh" over the bot's statement, real speech and real echo.

Real core (the order status journey), real recognizers and synthesizer, the simulator's virtual
clock: the caller's audio is mixed with the echo of what the bot played the frame before (a line
that leaks the bot's voice back at -10 dB), so the echo gate and the backchannel decision are
exercised together. Frame counts, not wall time, are asserted.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config import load_settings
from gateway.voice.backchannel import is_backchannel
from gateway.voice.pipeline import VoicePipeline
from gateway.voice.simulate import CallDriver, SimulatedControl
from tests.voice.speech_corpus import utterance

RATE = 8000
ECHO_GAIN = 0.3  # -10 dB: a poor line's echo


def test_what_counts_as_a_backchannel():
    for text in ("Uh-huh.", "Mm-hmm.", "Okay.", "OK.", "Yeah, right.", "I see.", "Got it.", "Thank you."):
        assert is_backchannel(text), text
    for text in ("Wait, that's not my order.", "No.", "I", "Stop", "Yes, I want an agent", ""):
        assert not is_backchannel(text), text


async def _talk_over(driver: CallDriver, pcm: bytes) -> int:
    """Feed ``pcm`` mixed with the echo of the bot's previous frame; returns the tick it started."""
    session, fb = driver.session, driver.session.frame_bytes
    start = driver.ticks
    for i in range(0, len(pcm) - fb + 1, fb):
        echo = np.frombuffer(bytes(driver.bot_audio[-fb:]) or bytes(fb), "<i2").astype(np.float32) * ECHO_GAIN
        mix = np.frombuffer(pcm[i:i + fb], "<i2").astype(np.float32) + echo
        await driver.tick(np.clip(mix, -32768, 32767).astype("<i2").tobytes())
        if session.ended.is_set():
            break
    return start


async def _to_the_statement(driver: CallDriver) -> None:
    """Play the bot's prompts (with their echo) until its statement about the order has played 0.4 s."""
    session = driver.session
    for _ in range(50 * 60):
        active = session.playback.active
        if active is not None and not active.question and "order" in active.text and active.frames_played >= 20:
            return
        await _talk_over(driver, bytes(session.frame_bytes))
    raise AssertionError(f"the statement never played: {session.transcript}")


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(overrides={"data_dir": str(tmp_path_factory.mktemp("backchannel"))})


async def _order_call(settings, call_id: str, caller_id: str):
    from gateway.app import build_core

    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    session = pipeline.session(call_id=call_id, sample_rate=RATE, caller_id=caller_id, control=SimulatedControl())
    await session.start()
    driver = CallDriver(session)
    await driver.wait_for_bot(60)
    await _talk_over(driver, utterance("I want to check the status of my order", snr_db=30, seed=51,
                                       lead_s=0.3, trail_s=0.3).pcm)
    await driver.wait_for_bot(60)
    assert session.expect.kind == "digits", session.transcript
    for key in "10001#":
        session.push_dtmf(key)
        await driver.tick()
    await _to_the_statement(driver)
    return core, pipeline, session, driver


@pytest.mark.slow
async def test_okay_over_a_statement_does_not_stop_the_bot_but_an_answer_to_its_question_does(settings):
    core, pipeline, session, driver = await _order_call(settings, "bc-1", "+15550177")
    try:
        statement = session.playback.active
        nod = utterance("okay", snr_db=30, seed=52, lead_s=0.05, trail_s=0.6)
        await _talk_over(driver, nod.pcm)
        await driver.wait_for_bot(60)
        assert not statement.cut and statement.finished, (session.barge_ins, session.transcript[-3:])
        # the nod (and, when its verdict comes late, the echo of the bot resuming over the line's
        # tail) only paused the bot: every pause was a backchannel, nothing was cut
        assert session.barge_ins and all(b["backchannel"] for b in session.barge_ins), session.barge_ins
        assert session.barge_ins[0]["onset"] < session.barge_ins[0]["confirmed"]
        bot = [text for who, text in session.transcript if who == "bot"]
        assert bot[-1].startswith("Would you like me to text you"), bot  # the question came after it, whole
        assert not any("ok" in text.lower() for who, text in session.transcript if who == "caller")
        assert session.expect.kind == "yesno"
        # over a question, "yeah" is the answer: the bot stops and the core takes it
        await _talk_over(driver, utterance("yes please", snr_db=30, seed=53, lead_s=0.05, trail_s=0.8).pcm)
        await driver.wait_for_bot(60)
        caller = [text for who, text in session.transcript if who == "caller"]
        assert "yes" in caller[-1].lower(), session.transcript
    finally:
        await session.stop()
        await pipeline.close()
        await core.store.close()


@pytest.mark.slow
async def test_a_real_interruption_silences_the_bot_within_150_ms_and_drops_the_rest(settings):
    core, pipeline, session, driver = await _order_call(settings, "bc-2", "+15550178")
    try:
        statement = session.playback.active
        said = utterance("wait, that is not my order", snr_db=30, seed=54, lead_s=0.0, trail_s=1.0)
        fb = session.frame_bytes
        start = await _talk_over(driver, said.pcm)
        bot = np.frombuffer(bytes(driver.bot_audio[start * fb:]), "<i2").astype(np.float32).reshape(-1, fb // 2)
        level = np.sqrt(np.mean(bot ** 2, axis=1))
        silent = int(np.argmax(level < 1.0))  # first silent bot frame after the caller began
        assert 0 < silent * 20 <= 150, (silent, level[:12])
        assert statement.cut and [b["backchannel"] for b in session.barge_ins] == [False], session.barge_ins
        await driver.wait_for_bot(60)
        caller = [text for who, text in session.transcript if who == "caller"]
        assert "order" in caller[-1].lower(), session.transcript
    finally:
        await session.stop()
        await pipeline.close()
        await core.store.close()
