"""gateway.voice.tts: hibari synthesis at call rates, caches, recorded prompts, espeak fallback."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from gateway.config import TtsSettings
from gateway.voice import audio
from gateway.voice.tts import CLAUSE_TRAIL_KEEP_MS, TRAIL_KEEP_MS, HibariEngine, Synthesizer, first_clause


def _rms(pcm: bytes) -> float:
    x = audio.pcm_to_float(pcm)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


async def test_synthesizes_speech_at_the_call_rate(tmp_path: Path) -> None:
    synth = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    pcm8 = await synth.synthesize("Thanks for calling, how can I help?", 8000)
    pcm16 = await synth.synthesize("Thanks for calling, how can I help?", 16000)
    assert synth.engine_name == "hibari"
    secs8, secs16 = audio.duration_seconds(pcm8, 8000), audio.duration_seconds(pcm16, 16000)
    assert 1.0 < secs8 < 5.0
    assert secs16 == pytest.approx(secs8, abs=0.01)
    assert _rms(pcm8) > 0.02
    # telephone band: at 8 kHz nothing can exceed 4 kHz; the energy sits in the voice band
    spec = np.abs(np.fft.rfft(audio.pcm_to_float(pcm16))) ** 2
    freqs = np.fft.rfftfreq(len(pcm16) // 2, 1 / 16000)
    assert spec[(freqs > 100) & (freqs < 4000)].sum() > 0.8 * spec.sum()
    await synth.close()


async def test_cache_hits_in_memory_and_on_disk(tmp_path: Path) -> None:
    text = "Your order has shipped."
    first = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    pcm = await first.synthesize(text, 8000)
    again = await first.synthesize("  Your order   has shipped. ", 8000)
    assert again == pcm
    assert first.stats["synthesized"] == 1 and first.stats["memory_hits"] == 1
    files = list(tmp_path.rglob("*.wav"))
    assert len(files) == 1
    second = Synthesizer(TtsSettings(), cache_dir=tmp_path)  # a new process: disk cache
    assert await second.synthesize(text, 8000) == pcm
    assert second.stats == {**second.stats, "disk_hits": 1, "synthesized": 0}
    # another rate or speed is another cache entry
    await second.synthesize(text, 16000)
    faster = Synthesizer(TtsSettings(speed=1.3), cache_dir=tmp_path)
    quick = await faster.synthesize(text, 8000)
    assert faster.stats["synthesized"] == 1
    assert len(quick) < len(pcm)
    assert len(list(tmp_path.rglob("*.wav"))) == 3
    # a damaged cache file is dropped and re-synthesized, not played
    files[0].write_bytes(b"garbage")
    third = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    assert await third.synthesize(text, 8000) == pcm
    assert third.stats["synthesized"] == 1


async def test_recorded_prompt_replaces_text(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    audio.write_wav(prompts / "welcome.wav", audio.float_to_pcm(tone), 16000)
    synth = Synthesizer(TtsSettings(prompts_dir=str(prompts)), cache_dir=tmp_path / "cache")
    pcm = await synth.synthesize("Welcome to the gateway.", 8000, prompt_id="welcome")
    assert len(pcm) == 16000  # one second at 8 kHz, resampled from the 16 kHz recording
    assert synth.stats["prompt_files"] == 1 and synth.stats["synthesized"] == 0
    # unknown prompt id or a path-like id: the text is synthesized instead
    spoken = await synth.synthesize("Welcome to the gateway.", 8000, prompt_id="../welcome")
    assert spoken != pcm and synth.stats["synthesized"] == 1
    await synth.synthesize("Welcome to the gateway.", 8000, prompt_id="missing")
    assert synth.stats["synthesized"] == 1  # cached by text


async def test_stream_gives_sentences_and_fills_the_cache(tmp_path: Path) -> None:
    synth = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    text = "Thanks for calling. Your order has shipped. It arrives on Friday."
    chunks = [c async for c in synth.stream(text, 8000)]
    assert len(chunks) >= 3
    whole = await synth.synthesize(text, 8000)
    assert synth.stats["memory_hits"] == 1
    assert whole == b"".join(chunks)
    assert [c async for c in synth.stream(text, 8000)] == [whole]


async def test_a_long_first_sentence_streams_its_first_clause_first(tmp_path: Path) -> None:
    synth = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    text = "Thanks, we've received your documents, and a colleague will review them by tomorrow morning."
    chunks = [c async for c in synth.stream(text, 8000)]
    # "Thanks, we've received your documents," then the rest of the sentence (and the resampler's tail)
    assert 2 <= len(chunks) <= 3
    first, rest = audio.duration_seconds(chunks[0], 8000), audio.duration_seconds(b"".join(chunks[1:]), 8000)
    assert 0.8 < first < rest
    assert _rms(chunks[0]) > 0.02 and _rms(chunks[1]) > 0.02
    # the clause's pause is a comma's (120 ms kept), shorter than the sentence's after the rest
    tail = audio.pcm_to_float(chunks[0])[-int(0.12 * 8000):]
    assert float(np.sqrt(np.mean(tail**2))) < 0.01
    assert await synth.synthesize(text, 8000) == b"".join(chunks)  # the cached audio is what streamed


def test_first_clause_split_rules(tmp_path: Path) -> None:
    ps = HibariEngine.shared("heart", tmp_path / "hibari-home").phonemes  # punctuation is kept in them
    # a short opener ("All right,") stays with what follows; a sentence without a clause stays whole
    assert len(first_clause(ps("All right, an agent will call you back at the number on your account."))) == 1
    assert len(first_clause(ps("Your order for a blue kettle is out for delivery and arrives on Friday."))) == 1
    # the split is in the first sentence only, and not when the rest would be a stub
    two = first_clause(ps("Thanks, we've received your documents, and a colleague will review them. See you."))
    assert [t for _p, t in two] == [CLAUSE_TRAIL_KEEP_MS, TRAIL_KEEP_MS, TRAIL_KEEP_MS]
    assert two[0][0].endswith(",")
    assert len(first_clause(ps("We have received all of your documents, thanks."))) == 1
    assert first_clause([]) == []


async def test_synthesis_runs_off_the_event_loop(tmp_path: Path) -> None:
    synth = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = synth.synthesize_sync

    def spy(*args: object) -> bytes:
        seen.append(threading.get_ident())
        return original(*args)  # type: ignore[arg-type]

    synth.synthesize_sync = spy  # type: ignore[method-assign]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    await synth.synthesize("A sentence that takes a moment to synthesize on this machine.", 8000)
    task.cancel()
    assert seen and loop_thread not in seen
    assert ticks > 0


async def test_unavailable_voice_falls_back_to_espeak(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    synth = Synthesizer(TtsSettings(voice="emma"), cache_dir=tmp_path)
    pcm = await synth.synthesize("Please hold.", 8000)
    assert synth.engine_name == "espeak"
    assert _rms(pcm) > 0.01 and 0.3 < audio.duration_seconds(pcm, 8000) < 3.0
    assert "not installed" in caplog.text and "emma" in caplog.text
    assert not (tmp_path / "hibari-home").exists() or not any((tmp_path / "hibari-home").iterdir())


async def test_espeak_engine_when_configured(tmp_path: Path) -> None:
    synth = Synthesizer(TtsSettings(engine="espeak", voice="en-us"), cache_dir=tmp_path)
    pcm = await synth.synthesize("One two three.", 16000)
    assert synth.engine_name == "espeak" and _rms(pcm) > 0.01
    assert [c async for c in synth.stream("One two three.", 16000)] == [pcm]


async def test_empty_text_is_silence(tmp_path: Path) -> None:
    synth = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    assert await synth.synthesize("   ", 8000) == b""


async def test_warm_up_runs_the_engine_without_touching_the_cache(tmp_path: Path) -> None:
    """A cached warm-up sentence would leave the engine cold for the first caller."""
    synth = Synthesizer(TtsSettings(), cache_dir=tmp_path)
    for _ in range(2):  # every start warms the engine, not only the first one
        await synth.warm_up()
    assert synth._hibari is not None, synth._hibari_error
    assert synth.stats["synthesized"] == 0 and synth.stats["memory_hits"] == 0
    assert not list(tmp_path.rglob("*.wav"))
