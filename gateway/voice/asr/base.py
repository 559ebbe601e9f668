"""What every recognizer returns and raises, and the text normalization they share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from gateway.core.actions import Expect

ENGINE_RATE = 16000
"""Every engine here decodes 16 kHz audio; 8 kHz calls are resampled up before decoding."""
WORKER_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4"}
"""Set in every recognizer worker's environment (``pool.WorkerProcess``; a process that decodes
in itself, as bench.asr does, sets it before numpy loads). numpy's OpenBLAS runs a matrix
product on a thread per core and then keeps those threads spinning (2^28 cycles by default):
the one product of a Whisper decode (the mel filters) made a one-thread worker burn two cores,
5.1 s of CPU and 2.6 s of wall for 24 decodes on two workers, each worker's spin stealing the
other's core. With the threads put to sleep at once (2^4 cycles): 3.5 s and 1.8 s. One BLAS
thread would do a little better (3.0 s and 1.55 s) but sums the product in another order, and
Whisper then wrote "four, zero, zero, zero, two" as 4-0-0-0-0-2: the features stay as they were."""
MAX_STREAMS = 64
"""Closed-set streams open at once in one stream process (``stream_worker``; each holds a decoder
of ~6 MB); more are refused and those turns are decoded whole by the closed-set pool instead."""


@dataclass(frozen=True)
class Transcript:
    """One recognized utterance.

    ``confidence`` is in [0, 1] (engine-specific meaning: Whisper's mean token probability,
    pocketsphinx's posterior); ``audio_seconds`` the utterance length; ``decode_seconds`` the wall
    time of recognition itself; ``queue_seconds`` the time spent waiting for a free worker.
    ``grammar_text`` is what the closed-set grammar heard in the same audio when it decoded it
    (``None`` when it did not): one word per digit, so a digit count is exact there, where Whisper
    may write "one zero zero zero" as "10,000".
    """

    text: str
    confidence: float
    engine: str
    audio_seconds: float
    decode_seconds: float
    queue_seconds: float = 0.0
    grammar_text: str | None = None


class Urgency:
    """Whether a caller waits for a recognition now. A speculative decode (in a pause of the
    caller's) is made not urgent: a recognizer serves every urgent request first. When the turn
    ends with only silence after that pause the decode is the turn's own, and ``hasten`` makes it
    urgent where it stands: it keeps its place in the queue among the urgent requests by the time
    it was made (the pause), not the time the turn ended."""

    __slots__ = ("urgent",)

    def __init__(self, urgent: bool = True) -> None:
        self.urgent = urgent

    def hasten(self) -> None:
        self.urgent = True

    def __repr__(self) -> str:
        return f"Urgency({self.urgent})"


class AsrError(RuntimeError):
    """Recognition failed: engine missing, crashed, timed out or refused the audio."""


class Engine(Protocol):
    """A recognizer the router can call from a worker thread."""

    name: str

    def recognize(self, pcm: bytes, sample_rate: int, expect: Expect) -> Transcript:
        """Recognize 16-bit mono PCM at ``sample_rate`` (blocking)."""
        ...


_WORD = re.compile(r"[a-z0-9']+")
_CONTRACTIONS = {
    "there's": "there is", "here's": "here is", "it's": "it is", "that's": "that is", "what's": "what is",
    "i'm": "i am", "i'd": "i would", "i've": "i have", "i'll": "i will", "don't": "do not",
    "doesn't": "does not", "didn't": "did not", "can't": "cannot", "won't": "will not", "isn't": "is not",
    "wasn't": "was not", "you're": "you are", "we're": "we are", "they're": "they are", "let's": "let us",
}


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, contractions expanded, for comparing transcripts."""
    words = _WORD.findall(text.lower().replace("-", " ").replace("’", "'"))
    return " ".join(_CONTRACTIONS.get(w, w) for w in words).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference word count) after normalization."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis (normalized words)."""
    errors, words = word_errors(reference, hypothesis)
    return errors / max(words, 1)
