"""Prompt synthesis on this machine: first-audio latency, real-time factor, cache, intelligibility.

    .venv/bin/python -m bench.tts

Corpus: twelve gateway prompts (greetings, questions, confirmations; 1-3 sentences each),
synthesized at 8 kHz. First audio is measured on ``Synthesizer.stream`` (first clause, then sentence by sentence),
cold (nothing cached). Intelligibility: each prompt at 8 kHz, telephone band, through Whisper
base (10 s window), as word error rate against the prompt text.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from gateway.config import AsrSettings, TtsSettings
from gateway.voice import audio
from gateway.voice.asr.base import ENGINE_RATE, word_errors
from gateway.voice.asr.router import resolve_path
from gateway.voice.asr.whisper import WhisperDecoder
from gateway.voice.tts import Synthesizer
from tests.voice.speech_corpus import band_limit

PROMPTS = (
    "Thanks for calling. How can I help you today?",
    "Please say or key in your eight digit account number.",
    "I found your order. It shipped on Monday and arrives on Friday.",
    "Is that correct? Please say yes or no.",
    "I am sorry, I did not catch that. Could you say it again?",
    "Let me transfer you to an agent who can help with your bill.",
    "Your refund of twenty five dollars will be processed within five business days.",
    "I have sent you a text message with a secure link to update your address.",
    "Which would you like: billing, technical support, or sales?",
    "Your appointment is confirmed for March third at ten thirty in the morning.",
    "Thank you for calling. Goodbye.",
    "For security, please tell me the last four digits of your card.",
)
RATE = 8000


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def first_audio(synth: Synthesizer, text: str) -> tuple[float, float, int]:
    """(seconds to first chunk, seconds to last chunk, total bytes) for a streamed synthesis."""
    start = time.perf_counter()
    first = 0.0
    total = 0
    async for chunk in synth.stream(text, RATE):
        if not first:
            first = time.perf_counter() - start
        total += len(chunk)
    return first, time.perf_counter() - start, total


async def run() -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for engine in ("hibari", "espeak"):
        settings = TtsSettings(engine=engine, voice="heart" if engine == "hibari" else "en-us")
        with tempfile.TemporaryDirectory() as tmp:
            synth = Synthesizer(settings, cache_dir=Path(tmp))
            await synth.warm_up()
            firsts, walls, audio_s = [], [], []
            cpu0 = time.process_time()
            for text in PROMPTS:
                first, wall, size = await first_audio(synth, text)
                firsts.append(first)
                walls.append(wall)
                audio_s.append(size / 2 / RATE)
            cpu = time.process_time() - cpu0
            hits = []
            for text in PROMPTS:
                t0 = time.perf_counter()
                await synth.synthesize(text, RATE)
                hits.append(time.perf_counter() - t0)
            disk = Synthesizer(settings, cache_dir=Path(tmp))
            disk_hits = []
            for text in PROMPTS:
                t0 = time.perf_counter()
                await disk.synthesize(text, RATE)
                disk_hits.append(time.perf_counter() - t0)
            texts[engine] = [synth.synthesize_sync(t, RATE).hex() for t in PROMPTS]
            await synth.close()
            await disk.close()
        print(f"  {engine:<7} first audio p50 {_pct(firsts, 50) * 1000:6.1f} ms  p95 {_pct(firsts, 95) * 1000:6.1f} ms | "
              f"whole prompt p50 {_pct(walls, 50) * 1000:6.1f} ms | RTF {sum(walls) / sum(audio_s):.4f} "
              f"({sum(audio_s) / sum(walls):.0f}x real time, cpu {cpu / sum(audio_s):.4f} s per audio s) | "
              f"cache hit memory p50 {statistics.median(hits) * 1e6:5.0f} us, disk p50 {statistics.median(disk_hits) * 1e3:5.2f} ms")
    return texts


def intelligibility(texts: dict[str, list[str]]) -> None:
    decoder = WhisperDecoder(resolve_path(AsrSettings().whisper_model_dir, None), threads=1)
    for engine, pcms in texts.items():
        errors = words = 0
        for text, hexpcm in zip(PROMPTS, pcms):
            x = band_limit(audio.pcm_to_float(bytes.fromhex(hexpcm)), RATE)
            x16 = audio.pcm_to_float(audio.resample(audio.float_to_pcm(x), RATE, ENGINE_RATE))
            result = decoder.transcribe([x16])[0]
            e, n = word_errors(text, result.text)
            errors, words = errors + e, words + n
        print(f"  {engine:<7} intelligibility at 8 kHz (Whisper base WER over {words} words): {errors / words:.3f}"
              "  (numbers Whisper writes as digits count as errors: '$25' for 'twenty five dollars')")


def main() -> int:
    print(f"corpus: {len(PROMPTS)} gateway prompts, {RATE} Hz; first audio = Synthesizer.stream, cold cache")
    texts = asyncio.run(run())
    intelligibility(texts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
