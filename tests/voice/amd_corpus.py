"""Answered calls for answering-machine detection: people saying hello, and voicemail greetings
with their beeps, as they sound on a phone line.

People: a short greeting ("hello?", "yes, this is Alice"), sometimes after a pause, then silence
while they wait for the caller. Machines: a recorded greeting of one to eight seconds, then
(mostly) a beep of 440 to 2000 Hz and 150 ms to 1 s, then silence. Speech is synthesized
(tests/voice/speech_corpus.py: hibari and espeak voices, pitch-shifted variants), the whole clip
is band-limited to 300-3400 Hz (a greeting's sentences are synthesized one by one and joined
with 0.3-0.6 s pauses), line noise runs under everything (pauses included, never digital
zero) and it goes through G.711 mu-law. Clips are cached like the speech corpus.

    from tests.voice.amd_corpus import corpus
    for clip in corpus(rate=8000):
        clip.pcm, clip.truth ("human"/"machine"), clip.beep_end_s (None without a beep)
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from gateway.voice import audio
from tests.voice.speech_corpus import band_limit, noise, utterance

HUMAN_GREETINGS = (
    "hello?", "hello", "yes?", "yeah, hello?", "hi", "yes, this is Alice", "Alice speaking",
    "hello, who is this?", "good morning", "this is Bob", "hey", "hello, Carmen here",
)
MACHINE_GREETINGS = (
    "Hi, you've reached Alice. I can't take your call right now, please leave a message after the tone.",
    "The person you are calling is not available. Please leave your message after the tone.",
    "Hello, this is Bob. Leave me a message and I'll call you back.",
    "You have reached the voicemail of five five five, one two three, four five six seven. "
    "Please record your message at the tone.",
    "Sorry we missed your call. Please leave your name and number.",
    "Leave a message.",
    "Hi, it's Carmen, leave a message.",
    "Thank you for calling. Our office is now closed. Please leave a message after the beep and we will "
    "return your call.",
)
BEEPS = ((1000, 0.5), (440, 1.0), (850, 0.3), (1400, 0.15), (2000, 0.4), (1000, 0.2))
"""(frequency Hz, length s) of voicemail tones."""
VOICES = ("heart", "heart-low", "heart-high", "espeak-m")
SENTENCE_PAUSE_S = (0.3, 0.6)
"""Pauses between a recorded greeting's sentences (people reading a greeting pause about this
long; the synthesizer alone would leave 0.84 s)."""
NOISE_DB = (-55.0, -45.0, -40.0)
"""Line noise under the whole clip, dBFS RMS."""


class Clip(NamedTuple):
    name: str
    pcm: bytes
    rate: int
    truth: str                 # "human" or "machine"
    beep_end_s: float | None   # when the beep stops (speak the message after it)


def _speech(text: str, voice: str, rate: int, speed: float) -> np.ndarray:
    """Clean speech (no silence around it), at ``rate``, peak 0.5."""
    u = utterance(text, voice=voice, speed=speed, rate=rate, lead_s=0.0, trail_s=0.0, telephone=False, ulaw=False)
    return audio.pcm_to_float(u.pcm)


def _tone(freq: float, seconds: float, rate: int, level: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005) if len(t) else t
    return (level * np.sin(2 * np.pi * freq * t) * ramp).astype(np.float32)


def _line(parts: list[np.ndarray], rate: int, noise_db: float, seed: int) -> bytes:
    clip = band_limit(np.concatenate(parts).astype(np.float32), rate)
    rng = np.random.default_rng(seed)
    hiss = band_limit(noise(len(clip), "pink", rng), rate)
    hiss /= max(float(np.sqrt(np.mean(hiss**2))), 1e-9)
    clip = np.clip(clip + hiss * 10 ** (noise_db / 20), -1.0, 1.0)
    return audio.ulaw_decode(audio.ulaw_encode(audio.float_to_pcm(clip)))


def human(text: str, *, voice: str = "heart", rate: int = 8000, lead_s: float = 0.4, wait_s: float = 3.0,
          noise_db: float = -50.0, speed: float = 1.0, seed: int = 0) -> Clip:
    """A person answering: ``lead_s`` of line, the greeting, then ``wait_s`` of waiting."""
    silence = lambda s: np.zeros(int(s * rate), np.float32)  # noqa: E731
    pcm = _line([silence(lead_s), _speech(text, voice, rate, speed), silence(wait_s)], rate, noise_db, seed)
    return Clip(f"human/{text}/{voice}/{lead_s}s/{noise_db:.0f}dB", pcm, rate, "human", None)


def machine(text: str, *, voice: str = "heart", rate: int = 8000, beep: tuple[float, float] | None = (1000, 0.5),
            lead_s: float = 0.3, noise_db: float = -50.0, speed: float = 1.0, seed: int = 0) -> Clip:
    """A voicemail: ``lead_s`` of line, the greeting, a short pause, the beep (or none), silence."""
    silence = lambda s: np.zeros(int(s * rate), np.float32)  # noqa: E731
    parts = [silence(lead_s)]
    sentences = [f"{x.strip()}." if not x.strip().endswith((".", "?", "!")) else x.strip()
                 for x in text.split(". ") if x.strip()]
    pauses = np.random.default_rng(seed).uniform(*SENTENCE_PAUSE_S, size=len(sentences))
    for i, sentence in enumerate(sentences):
        if i:
            parts.append(silence(float(pauses[i])))
        parts.append(_speech(sentence, voice, rate, speed))
    parts.append(silence(0.35))
    beep_end = None
    if beep is not None:
        parts.append(_tone(beep[0], beep[1], rate))
        beep_end = sum(len(p) for p in parts) / rate
    parts.append(silence(1.5))
    name = f"machine/{text[:30]}/{voice}/{beep[0] if beep else 'no'}Hz/{noise_db:.0f}dB"
    return Clip(name, _line(parts, rate, noise_db, seed), rate, "machine", beep_end)


def corpus(rate: int = 8000, size: str = "full") -> list[Clip]:
    """The detection corpus: ``full`` (120 clips: 60 people, 60 machines) or ``small`` (8)."""
    if size == "small":
        return [human("hello?", rate=rate), human("yes, this is Alice", voice="heart-low", rate=rate),
                human("hello", lead_s=1.5, rate=rate, noise_db=-40.0),
                human("hi", voice="espeak-m", rate=rate),
                machine(MACHINE_GREETINGS[0], rate=rate), machine(MACHINE_GREETINGS[5], beep=(850, 0.3), rate=rate),
                machine(MACHINE_GREETINGS[2], beep=None, rate=rate, noise_db=-40.0),
                machine(MACHINE_GREETINGS[6], voice="heart-high", beep=(1400, 0.15), rate=rate)]
    clips: list[Clip] = []
    combos = itertools.product(HUMAN_GREETINGS, VOICES, (0.3, 0.8, 1.5))
    for i, (text, voice, lead) in enumerate(itertools.islice(combos, 0, None, 2)):
        if len(clips) >= 60:
            break
        clips.append(human(text, voice=voice, lead_s=lead, rate=rate, noise_db=NOISE_DB[i % 3],
                           speed=(0.9, 1.0, 1.15)[i % 3], seed=i))
    combos = itertools.product(MACHINE_GREETINGS, VOICES, BEEPS + (None,))
    for i, (text, voice, beep) in enumerate(itertools.islice(combos, 0, None, 3)):
        if len(clips) >= 120:
            break
        clips.append(machine(text, voice=voice, beep=beep, rate=rate, noise_db=NOISE_DB[i % 3],
                             lead_s=(0.2, 0.6, 1.0)[i % 3], speed=(1.0, 1.1, 0.95)[i % 3], seed=100 + i))
    return clips
