"""Answering-machine detection: human, machine or unknown within a bounded time, and the beep.

Sans-IO: feed the answered call's audio one 20 ms frame at a time with the VAD's verdict for it
(``feed(frame, speech)``); the detector returns an :class:`AmdVerdict` once, then keeps watching
for the beep (``beep_ended``) so a voicemail message starts after the tone, not over it.

What it listens for, as people and machines answer the phone:

- a person says a short greeting ("hello?", "yes, this is Alice") and then waits for the caller:
  speech no longer than ``max_human_greeting_ms`` followed by ``human_gap_ms`` of silence is a
  **human**;
- a recording talks on: a greeting that runs past ``max_human_greeting_ms`` without such a gap,
  or that has ``max_human_words`` bursts of speech before one, is a **machine**;
- a beep (one steady tone, 300-2500 Hz, at least ``beep_min_ms``) is a **machine** at once,
  whatever came before (a short "leave a message" then the tone);
- nothing said for ``initial_silence_ms``, or no decision by ``max_seconds``, is **unknown**
  (the caller decides by ``bias``: speak to it as a person, or treat it as voicemail).

``bias`` (-1 .. +1) moves the greeting limit by up to 40 %: towards +1 a shorter greeting
already counts as a machine (more machines caught, more long-winded people misjudged), towards
-1 a longer one is still a person (no person hears a voicemail message, more machines get the
live journey). The tone test is a bank of DFT bins 8 Hz apart over the telephone band (the Goertzel
filter at every bin, done at once): the strongest bin's share of the frame's energy, steady in
frequency from frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

import numpy as np

from gateway.voice.audio import frame_bytes

FRAME_MS = 20
BEEP_BAND_HZ = (300.0, 2500.0)
"""Where voicemail beeps sit (440, 850, 1000, 1400 Hz are common); speech pitch stays below."""
TONE_SHARE = 0.8
"""A frame is tonal when one frequency (±``TONE_WIDTH_HZ``) holds this share of its energy
(speech spreads it over harmonics and formants; a beep concentrates it)."""
TONE_WIDTH_HZ = 35.0
TONE_WINDOW_FRAMES = 3
TONE_DRIFT_HZ = 12.0
"""Successive tonal frames of one beep stay within this of each other (a voice's harmonics
glide with its pitch, several times faster)."""
TONE_LEVEL_DB = 3.0
"""A beep holds its level within this (a voice rises and falls)."""
TONE_FLOOR_DBFS = -45.0
"""A tone quieter than this is line hum or noise, not a beep."""

SpeechTest = Callable[[bytes], bool]
"""The VAD's verdict for one 20 ms frame (speech or not)."""


class Verdict(str, Enum):
    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class AmdConfig:
    max_seconds: float = 3.0
    human_gap_ms: int = 800
    max_human_greeting_ms: int = 1600
    max_human_words: int = 4
    initial_silence_ms: int = 2500
    min_burst_ms: int = 100
    word_gap_ms: int = 150
    beep_min_ms: int = 120
    bias: float = 0.0

    @property
    def greeting_limit_ms(self) -> float:
        """The longest greeting still heard as a person, moved by ``bias`` (±40 %)."""
        return self.max_human_greeting_ms * (1.0 - 0.4 * max(-1.0, min(1.0, self.bias)))


@dataclass(frozen=True)
class AmdVerdict:
    verdict: Verdict
    at_seconds: float
    reason: str
    greeting_seconds: float = 0.0

    def is_machine(self, bias: float = 0.0) -> bool:
        """What the call acts on: a machine, or (``unknown``) a machine only when ``bias`` leans
        that way; otherwise the journey starts as for a person, who must never hear dead air."""
        return self.verdict is Verdict.MACHINE or (self.verdict is Verdict.UNKNOWN and bias > 0.5)


@dataclass(frozen=True)
class Detection:
    """One recording through the detector: the verdict and when the beep (if any) ended."""

    verdict: AmdVerdict
    beep_ended_at: float | None


def detect(pcm: bytes, rate: int, speech: "SpeechTest", config: AmdConfig | None = None) -> Detection:
    """Run a whole recording (16-bit PCM at ``rate``) through a detector, frame by frame as a
    call would: ``speech(frame)`` is the VAD's verdict for each 20 ms frame."""
    detector = AnsweringMachineDetector(rate, config)
    size = frame_bytes(rate)
    verdict: AmdVerdict | None = None
    beep_end: float | None = None
    for start in range(0, len(pcm) - size + 1, size):
        frame = pcm[start:start + size]
        verdict = detector.feed(frame, speech(frame)) or verdict
        if detector.beep_ended and beep_end is None:
            beep_end = detector.seconds
        if verdict is not None and (verdict.verdict is not Verdict.MACHINE or beep_end is not None):
            break  # a machine is listened to until its beep ends
    if verdict is None:
        verdict = AmdVerdict(Verdict.UNKNOWN, round(detector.seconds, 3), "recording ended")
    return Detection(verdict, beep_end)


class _ToneTracker:
    """Finds one steady tone in consecutive frames (a beep) and tells when it ends.

    Each frame is judged on the last ``TONE_WINDOW_FRAMES`` frames (60 ms): long enough that a
    pure tone's energy falls within ±``TONE_WIDTH_HZ`` of its frequency, while a voice spreads
    its energy over harmonics ``pitch`` apart."""

    def __init__(self, rate: int, min_ms: int) -> None:
        self.rate = rate
        self.min_frames = max(1, min_ms // FRAME_MS)
        size = rate * FRAME_MS // 1000 * TONE_WINDOW_FRAMES
        self._fft = 1 << (size * 2 - 1).bit_length()
        freqs = np.fft.rfftfreq(self._fft, 1.0 / rate)
        self._band = (freqs >= BEEP_BAND_HZ[0]) & (freqs <= BEEP_BAND_HZ[1])
        self._speech_band = (freqs >= 100.0) & (freqs <= 3600.0)
        self._freqs = freqs
        self._half_width = max(1, int(round(TONE_WIDTH_HZ / (rate / self._fft))))
        self._window = np.hanning(size).astype(np.float32)
        self._recent = np.zeros(size, np.float32)
        self.run = 0
        self.freq = 0.0
        self.level = 0.0
        self.active = False

    def feed(self, samples: np.ndarray) -> tuple[bool, bool]:
        """(a beep is sounding now, a beep just ended)."""
        n = samples.size
        self._recent = np.concatenate([self._recent[n:], samples])
        tonal, freq, level = self._tonal(self._recent)
        steady = tonal and (self.run == 0 or (abs(freq - self.freq) <= TONE_DRIFT_HZ
                                              and abs(level - self.level) <= TONE_LEVEL_DB))
        if steady:
            if self.run == 0:
                self.level = level
            self.run += 1
            self.freq = freq
        else:
            self.run = 1 if tonal else 0
            self.freq = freq if tonal else 0.0
            self.level = level
        was = self.active
        self.active = self.run >= self.min_frames
        return self.active, was and not self.active

    def _tonal(self, samples: np.ndarray) -> tuple[bool, float, float]:
        rms = float(np.sqrt(np.mean(samples[-samples.size // TONE_WINDOW_FRAMES:] ** 2)))
        level = 20 * np.log10(rms) if rms > 0.0 else -120.0
        if level < TONE_FLOOR_DBFS:
            return False, 0.0, level
        power = np.abs(np.fft.rfft(samples * self._window, self._fft)) ** 2
        total = float(power[self._speech_band].sum())
        peak = int(np.argmax(np.where(self._band, power, 0.0)))
        w = self._half_width
        share = float(power[max(0, peak - w):peak + w + 1].sum()) / total if total > 0 else 0.0
        return share >= TONE_SHARE, float(self._freqs[peak]), level


class AnsweringMachineDetector:
    """One answered call's detector (see the module docstring)."""

    def __init__(self, rate: int, config: AmdConfig | None = None) -> None:
        self.rate = rate
        self.config = config or AmdConfig()
        self._frame_bytes = frame_bytes(rate)
        self._tone = _ToneTracker(rate, self.config.beep_min_ms)
        self.frames = 0
        self.result: AmdVerdict | None = None
        self.beep_heard = False
        self.beep_ended = False  # a beep sounded and stopped: speak the voicemail message now
        self._voiced_run = 0         # frames of speech in the current burst
        self._silent_run = 0         # frames of silence since the last speech
        self._onset: int | None = None   # frame where the greeting began
        self._last_speech: int | None = None
        self._bursts = 0             # bursts of speech ("words") in the greeting so far
        self._in_burst = False

    @property
    def seconds(self) -> float:
        return self.frames * FRAME_MS / 1000.0

    @property
    def beeping(self) -> bool:
        """A beep is sounding now."""
        return self._tone.active

    def feed(self, frame: bytes, speech: bool) -> AmdVerdict | None:
        """One 20 ms frame and whether the VAD heard speech in it; the verdict once it is known."""
        if len(frame) != self._frame_bytes:
            raise ValueError(f"AMD frame of {len(frame)} bytes, expected {self._frame_bytes}")
        self.frames += 1
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        beeping, beep_ended = self._tone.feed(samples)
        if beeping:
            self.beep_heard = True
            speech = False  # a tone is not a greeting
        if beep_ended:
            self.beep_ended = True
        if self.result is not None:
            return None
        if beeping:
            return self._decide(Verdict.MACHINE, "beep")
        self._track(speech)
        return self._judge()

    # -- internals ---------------------------------------------------------------------------
    def _track(self, speech: bool) -> None:
        cfg = self.config
        if speech:
            self._voiced_run += 1
            self._silent_run = 0
            if self._voiced_run * FRAME_MS >= cfg.min_burst_ms:
                if self._onset is None:
                    self._onset = self.frames - self._voiced_run
                if not self._in_burst:
                    self._bursts += 1
                    self._in_burst = True
                self._last_speech = self.frames
        else:
            self._silent_run += 1
            self._voiced_run = 0
            if self._silent_run * FRAME_MS >= cfg.word_gap_ms:
                self._in_burst = False

    def _judge(self) -> AmdVerdict | None:
        cfg = self.config
        ms = self.frames * FRAME_MS
        if self._onset is None:
            if ms >= cfg.initial_silence_ms:
                return self._decide(Verdict.UNKNOWN, "initial silence")
        else:
            assert self._last_speech is not None
            greeting_ms = (self._last_speech - self._onset) * FRAME_MS
            if self._silent_run * FRAME_MS >= cfg.human_gap_ms:
                if greeting_ms <= cfg.greeting_limit_ms and self._bursts < cfg.max_human_words:
                    return self._decide(Verdict.HUMAN, "short greeting, then waiting", greeting_ms)
                return self._decide(Verdict.MACHINE, "long greeting", greeting_ms)
            if greeting_ms > cfg.greeting_limit_ms:
                return self._decide(Verdict.MACHINE, "greeting runs on", greeting_ms)
            if self._bursts >= cfg.max_human_words + 2:
                return self._decide(Verdict.MACHINE, "many words without a pause", greeting_ms)
        if ms >= cfg.max_seconds * 1000:
            return self._decide(Verdict.UNKNOWN, "no decision in time")
        return None

    def _decide(self, verdict: Verdict, reason: str, greeting_ms: float = 0.0) -> AmdVerdict:
        self.result = AmdVerdict(verdict, round(self.seconds, 3), reason, round(greeting_ms / 1000.0, 3))
        return self.result
