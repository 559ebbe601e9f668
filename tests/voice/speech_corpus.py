"""Test speech with known words and known boundaries, as it sounds on a phone line.

Utterances are synthesized with hibari (its bundled voice "heart"; the wheel ships no other voice,
so speaker variety comes from formant/pitch-shifted variants of it and from espeak-ng's voices),
trimmed to the speech itself, padded with silence of known length, resampled to the call rate,
band-limited to the telephone band (300-3400 Hz), optionally passed through G.711 mu-law, and
optionally mixed with white or pink noise at a given SNR (measured on the speech part).

    from tests.voice.speech_corpus import utterance, OPEN_SENTENCES
    u = utterance("I want to check the status of my order", speed=1.1, snr_db=15)
    pcm, rate, text, start_s, end_s = u

Generated clips are cached on disk (``SPEECH_CORPUS_CACHE`` or a folder in the temp dir), so a
test run after the first loads WAV files instead of synthesizing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gateway.voice import audio

CORPUS_VERSION = 2
HIBARI_RATE = 24000
BAND_HZ = (300.0, 3400.0)

VOICES: dict[str, tuple[str, float]] = {
    "heart": ("hibari", 1.0),        # the bundled hibari voice as it is
    "heart-low": ("hibari", 0.88),   # formants and pitch shifted down (a deeper speaker)
    "heart-high": ("hibari", 1.10),  # shifted up (a higher, smaller speaker)
    "espeak-m": ("espeak", 1.0),     # espeak-ng en-us, a robotic male voice (hard for recognizers)
}
"""Voice name -> (engine, frequency shift factor)."""

OPEN_SENTENCES = (
    "I want to check the status of my order",
    "there is a wrong charge on my bill",
    "I would like to speak to an agent",
    "my package never arrived",
    "can you help me reset my password",
    "I need to change my delivery address",
    "I was charged twice for the same order",
    "please cancel my subscription",
    "when will my refund be processed",
    "I want to pay my bill",
    "the internet at my home is not working",
    "I am calling about my account",
)
DIGIT_STRINGS = (
    ("four five six one two", "45612"),
    ("one oh two three", "1023"),
    ("zero nine eight seven six five four three", "09876543"),
    ("three three seven", "337"),
    ("eight two zero oh one", "82001"),
    ("seven one four nine", "7149"),
)
YES_NO = (
    ("yes", "yes"), ("no", "no"), ("yes please", "yes"), ("no thank you", "no"),
    ("yeah", "yes"), ("nope", "no"), ("that's right", "yes"), ("correct", "yes"),
)
DATES = (
    "March third", "the fifteenth of June", "December twenty first", "January first two thousand twenty five",
)


class Utterance(NamedTuple):
    """One test clip: 16-bit mono PCM at ``rate``, its words and where the speech lies in it."""

    pcm: bytes
    rate: int
    text: str
    speech_start_s: float
    speech_end_s: float


def cache_dir() -> Path:
    """Where generated clips are kept between test runs."""
    path = Path(os.environ.get("SPEECH_CORPUS_CACHE") or Path(tempfile.gettempdir()) / "voicegw-speech-corpus")
    path.mkdir(parents=True, exist_ok=True)
    return path


_engine_lock = threading.Lock()
_hibari = None


def _speak(text: str, engine: str, speed: float) -> tuple[np.ndarray, int]:
    """Clean synthesized speech: float32 samples and their rate."""
    global _hibari
    if engine == "espeak":
        from gateway.voice.tts import EspeakEngine

        return EspeakEngine("en-us+m3").synthesize(text, speed)
    with _engine_lock:
        if _hibari is None:
            from gateway.voice.tts import HibariEngine

            _hibari = HibariEngine.shared("heart", cache_dir() / "hibari-home")
        parts = list(_hibari.sentences(text, speed))
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), HIBARI_RATE


def _speech_extent(x: np.ndarray, rate: int) -> tuple[int, int]:
    """First and last sample of speech: 10 ms RMS above -35 dB of the loudest 10 ms."""
    win = max(1, rate // 100)
    n = len(x) // win
    if n == 0:
        return 0, len(x)
    rms = np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1))
    active = np.nonzero(rms > rms.max() * 10 ** (-35 / 20))[0]
    return int(active[0] * win), int(min(len(x), (active[-1] + 1) * win))


def band_limit(x: np.ndarray, rate: int, low: float = BAND_HZ[0], high: float = BAND_HZ[1]) -> np.ndarray:
    """Telephone band-pass by an FFT mask with 100 Hz cosine skirts."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    gain = np.ones_like(freqs)
    skirt = 100.0
    gain[freqs < low - skirt] = 0.0
    lo = (freqs >= low - skirt) & (freqs < low)
    gain[lo] = 0.5 - 0.5 * np.cos(np.pi * (freqs[lo] - (low - skirt)) / skirt)
    gain[freqs > high + skirt] = 0.0
    hi = (freqs > high) & (freqs <= high + skirt)
    gain[hi] = 0.5 + 0.5 * np.cos(np.pi * (freqs[hi] - high) / skirt)
    return np.fft.irfft(spec * gain, n=len(x)).astype(np.float32)


def noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise."""
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "pink":
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0
        white = np.fft.irfft(spec / np.sqrt(f), n=n).astype(np.float32)
    return white / max(float(np.sqrt(np.mean(white**2))), 1e-9)


def utterance(
    text: str,
    *,
    voice: str = "heart",
    speed: float = 1.0,
    rate: int = 8000,
    lead_s: float = 0.5,
    trail_s: float = 0.5,
    snr_db: float | None = None,
    noise_kind: str = "white",
    telephone: bool = True,
    ulaw: bool = True,
    seed: int = 0,
) -> Utterance:
    """A clip of ``text`` with ``lead_s``/``trail_s`` of silence (or noise) around the speech.

    ``telephone``: 300-3400 Hz band; ``ulaw``: through G.711 mu-law and back; ``snr_db``: noise
    added at that speech-to-noise ratio (None: clean).
    """
    params = [CORPUS_VERSION, text, voice, speed, rate, lead_s, trail_s, snr_db, noise_kind, telephone, ulaw, seed]
    key = hashlib.sha256(json.dumps(params).encode()).hexdigest()[:24]
    wav, meta = cache_dir() / f"{key}.wav", cache_dir() / f"{key}.json"
    if wav.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        pcm, file_rate = audio.read_wav(wav)
        return Utterance(pcm, file_rate, text, info["start"], info["end"])

    engine, shift = VOICES[voice]
    x, src_rate = _speak(text, engine, speed)
    start, end = _speech_extent(x, src_rate)
    x = x[start:end]
    # A shift factor f plays the audio as if recorded at f * rate: formants and pitch scale by f.
    pcm = audio.resample(audio.float_to_pcm(x), int(round(src_rate * shift)), rate) if shift != 1.0 else \
        audio.resample(audio.float_to_pcm(x), src_rate, rate)
    speech = audio.pcm_to_float(pcm)
    peak = float(np.max(np.abs(speech))) or 1.0
    speech = speech * (0.5 / peak)
    lead, trail = int(round(lead_s * rate)), int(round(trail_s * rate))
    clip = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
    if telephone:
        clip = band_limit(clip, rate)
    if snr_db is not None:
        rng = np.random.default_rng(seed)
        speech_rms = float(np.sqrt(np.mean(clip[lead:lead + len(speech)] ** 2)))
        n = noise(len(clip), noise_kind, rng)
        if telephone:
            n = band_limit(n, rate)
            n /= max(float(np.sqrt(np.mean(n**2))), 1e-9)
        clip = clip + n * speech_rms * 10 ** (-snr_db / 20)
    clip = np.clip(clip, -1.0, 1.0)
    out = audio.float_to_pcm(clip)
    if ulaw:
        out = audio.ulaw_decode(audio.ulaw_encode(out))
    start_s, end_s = lead / rate, (lead + len(speech)) / rate
    # meta first, then the clip, each renamed into place: a reader that sees the clip sees both
    tag = f"{os.getpid()}.{threading.get_ident()}"
    tmp_meta = meta.with_suffix(f".{tag}.tmp")
    tmp_meta.write_text(json.dumps({"text": text, "start": start_s, "end": end_s, "params": params}))
    tmp_meta.replace(meta)
    tmp = wav.with_suffix(f".{tag}.tmp.wav")
    audio.write_wav(tmp, out, rate)
    tmp.replace(wav)
    return Utterance(out, rate, text, start_s, end_s)


def concatenate(parts: list[Utterance], gap_s: float = 0.0) -> bytes:
    """PCM of several clips (same rate) one after another, with ``gap_s`` of silence between."""
    if not parts:
        return b""
    gap = b"\x00\x00" * int(round(gap_s * parts[0].rate))
    return gap.join(p.pcm for p in parts)
