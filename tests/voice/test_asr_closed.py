"""Closed-set recognition: grammars from Expect, pocketsphinx on real synthesized speech, Vosk loading."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from gateway.config import AsrSettings
from gateway.core.actions import Expect
from gateway.voice.asr import AsrError, AsrRouter
from gateway.voice.asr.grammar import jsgf_for, plausible, spoken_digits, vosk_grammar_for
from gateway.voice.asr.sphinx import PocketsphinxEngine
from gateway.voice.asr.vosk_engine import VoskEngine
from tests.voice.speech_corpus import DIGIT_STRINGS, YES_NO, utterance

YES_WORDS = {"yes", "yeah", "yep", "yup", "sure", "correct", "right", "that's", "that", "okay", "of", "absolutely"}


def _meaning(text: str) -> str:
    words = text.split()
    if not words:
        return ""
    return "no" if words[0] in ("no", "nope", "nah", "not", "incorrect", "wrong") else (
        "yes" if words[0] in YES_WORDS else "")


@pytest.fixture(scope="module")
def sphinx() -> PocketsphinxEngine:
    return PocketsphinxEngine()


def test_grammars_follow_the_expectation() -> None:
    g = jsgf_for(Expect(kind="digits", min_digits=2, max_digits=4))
    assert "<reply> = <digit> <digit> [<digit> [<digit>]];" in g
    assert "<reply> = <digit> <digit> <digit>;" in jsgf_for(Expect(kind="digits", min_digits=3, max_digits=3))
    # every closed grammar hears the global phrases and has a garbage loop for everything else
    assert "public <answer> = <reply> | <global> | <other>;" in g and "speak to an agent" in g and "go back" in g
    assert "package" in g and "| want |" not in g  # "want" sounds like "one": not in a digits loop
    assert "| know |" not in jsgf_for(Expect(kind="yesno"))  # "know" sounds like "no"
    assert "public <answer> = <digit> <digit> <digit>;" in jsgf_for(Expect(kind="digits", min_digits=3, max_digits=3),
                                                                     rejection=False)
    assert "oh" in g and "zero" in g
    assert "no thank you" in jsgf_for(Expect(kind="yesno"))
    assert "(billing | technical support)" in jsgf_for(Expect(kind="choice", options=("Billing", "technical support")))
    vosk = json.loads(vosk_grammar_for(Expect(kind="choice", options=("sales",))))
    assert vosk[0] == "sales" and vosk[-1] == "[unk]" and "representative" in vosk
    with pytest.raises(ValueError):
        jsgf_for(Expect(kind="open"))
    assert plausible("four five six", Expect(kind="digits", min_digits=3, max_digits=3))
    assert not plausible("four five", Expect(kind="digits", min_digits=3, max_digits=3))
    assert plausible("no thank you", Expect(kind="yesno")) and not plausible("that is", Expect(kind="yesno"))
    assert plausible("the billing please", Expect(kind="choice", options=("billing",)))
    assert spoken_digits("4-5-6, oh one") == "45601"


@pytest.mark.slow
def test_digits_on_wideband_calls(sphinx: PocketsphinxEngine) -> None:
    for text, digits in DIGIT_STRINGS:
        u = utterance(text, rate=16000, telephone=False, ulaw=False)
        t = sphinx.recognize(u.pcm, 16000, Expect(kind="digits", min_digits=len(digits), max_digits=len(digits)))
        assert spoken_digits(t.text) == digits, (text, t.text)
        assert t.text == text  # words kept as spoken ("oh" stays "oh"); the NLU parses them
        assert t.engine == "pocketsphinx" and t.decode_seconds < t.audio_seconds


@pytest.mark.slow
def test_digits_of_unknown_length_on_narrowband_calls(sphinx: PocketsphinxEngine) -> None:
    """A journey that asks for digits without a length gets a 1-24 digit grammar; pocketsphinx
    decodes it in a fraction of a second (a row of 23 optional digits took about 38 s)."""
    for text, digits in DIGIT_STRINGS[:3]:
        u = utterance(text)
        t = sphinx.recognize(u.pcm, u.rate, Expect(kind="digits"))
        assert plausible(t.text, Expect(kind="digits")), t.text
        assert abs(len(spoken_digits(t.text)) - len(digits)) <= 1, (text, t.text)
        assert t.decode_seconds < 10.0, (text, t.decode_seconds)


@pytest.mark.slow
def test_yes_no_on_wideband_calls(sphinx: PocketsphinxEngine) -> None:
    right = 0
    for text, meaning in YES_NO:
        u = utterance(text, rate=16000, telephone=False, ulaw=False)
        right += _meaning(sphinx.recognize(u.pcm, 16000, Expect(kind="yesno")).text) == meaning
    assert right >= len(YES_NO) - 1


@pytest.mark.slow
def test_closed_sets_on_narrowband_calls(sphinx: PocketsphinxEngine) -> None:
    """8 kHz telephone audio (band-limited, mu-law) is harder for the wideband model: most right."""
    digits_right = yes_right = 0
    for voice in ("heart", "heart-low"):
        for text, digits in DIGIT_STRINGS:
            u = utterance(text, voice=voice)
            t = sphinx.recognize(u.pcm, 8000, Expect(kind="digits", min_digits=len(digits), max_digits=len(digits)))
            digits_right += spoken_digits(t.text) == digits
        for text, meaning in YES_NO:
            u = utterance(text, voice=voice)
            yes_right += _meaning(sphinx.recognize(u.pcm, 8000, Expect(kind="yesno")).text) == meaning
    assert digits_right >= 0.6 * 2 * len(DIGIT_STRINGS)
    assert yes_right >= 0.6 * 2 * len(YES_NO)


@pytest.mark.slow
def test_choice_options(sphinx: PocketsphinxEngine) -> None:
    expect = Expect(kind="choice", options=("billing", "technical support", "sales"))
    for option in expect.options:
        u = utterance(option, rate=16000, telephone=False, ulaw=False)
        assert sphinx.recognize(u.pcm, 16000, expect).text == option


@pytest.mark.slow
def test_silence_gives_no_answer(sphinx: PocketsphinxEngine) -> None:
    t = sphinx.recognize(b"\x00\x00" * 16000, 8000, Expect(kind="yesno"))
    assert not plausible(t.text, Expect(kind="yesno")) or t.confidence < 0.5


async def test_engine_failure_is_an_asr_error(tmp_path: Path) -> None:
    """Options the recognizer has no words for make pocketsphinx fail: one clear AsrError."""
    router = AsrRouter(AsrSettings(open_engine="pocketsphinx"), fallback=False)
    await router.start()
    try:
        u = utterance("billing")
        with pytest.raises(AsrError, match="pocketsphinx failed: no option"):
            await router.recognize(u.pcm, 8000, Expect(kind="choice", options=("zzqxv", "qqwyk")))
        with pytest.raises(AsrError, match="not 16-bit"):
            await router.recognize(b"\x00\x01\x02", 8000, Expect(kind="yesno"))
        with pytest.raises(AsrError, match="sample rate"):
            await router.recognize(b"\x00\x00" * 100, 1000, Expect(kind="yesno"))
        empty = await router.recognize(b"", 8000, Expect(kind="yesno"))
        assert empty.text == "" and empty.confidence == 0.0
        ok = await router.recognize(utterance("yes").pcm, 8000, Expect(kind="yesno"))
        assert ok.engine == "pocketsphinx"  # the router still works after a failure
    finally:
        await router.close()


async def test_not_started_router_refuses() -> None:
    router = AsrRouter(AsrSettings(open_engine="pocketsphinx"), fallback=False)
    with pytest.raises(AsrError, match="not started"):
        await router.recognize(b"\x00\x00", 8000, Expect())
    await router.close()


def test_missing_vosk_model_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "vosk-model-en"
    with pytest.raises(AsrError, match=str(missing)):
        VoskEngine(missing)
    missing.mkdir()
    with pytest.raises(AsrError, match="holds no model"):
        VoskEngine(missing)


def test_invalid_vosk_model_is_reported_by_the_real_loader(tmp_path: Path) -> None:
    bogus = tmp_path / "vosk-bogus"
    (bogus / "conf").mkdir(parents=True)
    (bogus / "conf" / "model.conf").write_text("--sample-frequency=16000\n")
    (bogus / "am").mkdir()
    (bogus / "am" / "final.mdl").write_bytes(b"not a kaldi model")
    with pytest.raises(AsrError, match=f"Vosk could not load the model in {bogus}"):
        VoskEngine(bogus)


async def test_router_with_vosk_configured_fails_at_start_naming_the_path(tmp_path: Path) -> None:
    settings = AsrSettings(open_engine="pocketsphinx", vosk_model_dir=str(tmp_path / "no-such-model"))
    router = AsrRouter(settings, fallback=False)
    assert router.closed_engine == "vosk"
    with pytest.raises(AsrError, match="no-such-model"):
        await router.start()
    await router.close()
    relative = AsrRouter(AsrSettings(open_engine="vosk", vosk_model_dir=""), fallback=False)
    with pytest.raises(AsrError, match="vosk_model_dir is empty"):
        await relative.start()
    await relative.close()


async def test_invalid_vosk_model_fails_the_router_start_from_its_worker(tmp_path: Path) -> None:
    bogus = tmp_path / "vosk-bogus"
    (bogus / "am").mkdir(parents=True)
    (bogus / "am" / "final.mdl").write_bytes(b"not a kaldi model")
    router = AsrRouter(AsrSettings(open_engine="pocketsphinx", vosk_model_dir=str(bogus)), fallback=False)
    with pytest.raises(AsrError, match=f"Vosk could not load the model in {bogus}"):
        await router.start()
    await router.close()


async def test_closed_sets_decode_in_a_worker_process_that_is_replaced_when_it_dies() -> None:
    router = AsrRouter(AsrSettings(open_engine="pocketsphinx", closed_workers=1, closed_streaming=False),
                       fallback=False)
    await router.start()
    try:
        [pid] = router.worker_pids()
        assert pid != os.getpid()
        yes = utterance("yes")
        assert _meaning((await router.recognize(yes.pcm, 8000, Expect(kind="yesno"))).text) == "yes"
        os.kill(pid, signal.SIGKILL)
        again = await router.recognize(yes.pcm, 8000, Expect(kind="yesno"))
        assert _meaning(again.text) == "yes" and again.engine == "pocketsphinx"
        [fresh] = router.worker_pids()
        assert fresh != pid
    finally:
        await router.close()
    assert not _running(fresh)


async def test_stalled_worker_is_an_asr_error_and_restarted() -> None:
    router = AsrRouter(AsrSettings(open_engine="pocketsphinx", closed_workers=1, closed_streaming=False),
                       fallback=False, timeout_seconds=3.0)
    await router.start()
    try:
        [pid] = router.worker_pids()
        os.kill(pid, signal.SIGSTOP)  # alive but never answers
        yes = utterance("yes")
        with pytest.raises(AsrError, match="pocketsphinx"):
            await router.recognize(yes.pcm, 8000, Expect(kind="yesno"))
        deadline = time.monotonic() + 60
        while router.worker_pids() in ([], [pid]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the overrun worker is killed and replaced in the background
        assert router.worker_pids() and router.worker_pids() != [pid]
        assert not _running(pid)
        assert _meaning((await router.recognize(yes.pcm, 8000, Expect(kind="yesno"))).text) == "yes"
    finally:
        await router.close()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
