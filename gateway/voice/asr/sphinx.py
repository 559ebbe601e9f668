"""pocketsphinx 5 on closed grammars (digits, yes/no, a few options): fast and restricted.

pocketsphinx's shipped US English model is wideband: it is fed 16 kHz audio (8 kHz calls are
resampled up; its own 8 kHz settings do not work with this model). Narrowband audio also gets a
faint telephone-band noise floor before decoding: digitally silent frames (what a codec delivers
between words on a clean line) throw the wideband model off, and the floor halves the errors on
the synthesized 8 kHz corpus (bench/asr.py). Each closed ``Expect`` becomes
a JSGF grammar (with the global phrases and a garbage loop: out-of-grammar speech comes back as
"" rather than a forced answer), compiled once and kept as a named search. A decoder is not thread-safe, so
decoding is serialized by a lock; it is fast enough (a few hundredths of real time) to share. The
gateway runs it in a worker process (``closed.ClosedSetProcess``): it decodes with the GIL held.
The decoders load no language model (grammars only need the dictionary and the acoustic
model: 28 MB instead of 95 MB); ``Searches`` and ``read_hypothesis`` are shared with the
streaming decoders of ``stream_worker``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from gateway.core.actions import Expect
from gateway.voice.asr.base import ENGINE_RATE, AsrError, Transcript
from gateway.voice.asr.grammar import in_grammar, jsgf_for
from gateway.voice.audio import pcm_to_float, float_to_pcm, resample

log = logging.getLogger(__name__)

MAX_SEARCHES = 64
"""Compiled grammars kept per decoder; older ones are dropped (journeys use a handful)."""
NOISE_FLOOR_RMS = 30.0 / 32768.0
"""Noise floor added to narrowband audio: about 55-60 dB under normal speech, inaudible."""
TELEPHONE_BAND_HZ = (300.0, 3400.0)
_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[noise]", "<unk>"}


def new_decoder(**options: Any) -> Any:
    """A pocketsphinx decoder for grammars at 16 kHz, without a language model (``AsrError`` if
    pocketsphinx or its model is missing)."""
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:
        raise AsrError("pocketsphinx is not installed (pip install pocketsphinx)") from exc
    try:
        return Decoder(samprate=ENGINE_RATE, loglevel="FATAL", lm=None, **options)
    except (RuntimeError, ValueError) as exc:
        raise AsrError(f"pocketsphinx could not load its model: {exc}") from exc


class Searches:
    """The grammars compiled in one decoder, by name; the oldest dropped past ``MAX_SEARCHES``."""

    def __init__(self, decoder: Any, known: Callable[[str], bool], rejection: bool = True) -> None:
        self.decoder = decoder
        self.known = known  # the words pocketsphinx can pronounce
        self.rejection = rejection  # global phrases and the garbage loop in every grammar (grammar.py)
        self._names: list[str] = []

    def grammar(self, expect: Expect) -> str:
        return jsgf_for(expect, self.known, rejection=self.rejection)

    def activate(self, expect: Expect, before_compile: Callable[[str], None] | None = None) -> None:
        """Make the grammar for ``expect`` the decoder's search (compiled on first use;
        ``before_compile`` gets the grammar text first, to add its words to a small dictionary)."""
        if not expect.closed:
            raise AsrError(f"pocketsphinx here only decodes closed sets, not {expect.kind!r}")
        grammar = self.grammar(expect)
        name = "g" + hashlib.sha1(grammar.encode()).hexdigest()[:16]
        if name not in self._names:
            if before_compile is not None:
                before_compile(grammar)
            try:
                self.decoder.add_jsgf_string(name, grammar)
            except (RuntimeError, ValueError) as exc:
                raise AsrError(f"pocketsphinx rejected the grammar for {expect.kind}: {exc}") from exc
            self._names.append(name)
            if len(self._names) > MAX_SEARCHES:
                self.decoder.remove_search(self._names.pop(0))
        self.decoder.activate_search(name)

    def read_hypothesis(self, expect: Expect) -> tuple[str, float]:
        """(text, confidence) of the decoder's current best path, out-of-grammar speech as ""."""
        hyp = self.decoder.hyp()
        if hyp is None or not hyp.hypstr:
            return "", 0.0
        words = [w.split("(")[0] for w in hyp.hypstr.split() if w not in _FILLERS]
        text = in_grammar(" ".join(words), expect) if self.rejection else " ".join(words)
        return text, (max(0.0, min(1.0, float(hyp.prob))) if text else 0.0)


class PocketsphinxEngine:
    """Closed-set recognition with runtime JSGF grammars."""

    name = "pocketsphinx"

    def __init__(self, rejection: bool = True) -> None:
        self._decoder = new_decoder()
        self._searches = Searches(self._decoder, self._known, rejection)
        self._lock = threading.Lock()

    @property
    def rejection(self) -> bool:
        return self._searches.rejection

    @rejection.setter
    def rejection(self, value: bool) -> None:
        self._searches.rejection = value

    def _known(self, word: str) -> bool:
        return self._decoder.lookup_word(word) is not None

    def recognize(self, pcm: bytes, sample_rate: int, expect: Expect) -> Transcript:
        """Decode a whole utterance against the grammar for ``expect`` (blocking)."""
        pcm16k = prepare_audio(pcm, sample_rate)
        if not expect.closed:
            raise AsrError(f"pocketsphinx here only decodes closed sets, not {expect.kind!r}")
        start = time.perf_counter()
        with self._lock:
            try:
                self._searches.activate(expect)
                self._decoder.start_utt()
                self._decoder.process_raw(pcm16k, full_utt=True)
                self._decoder.end_utt()
            except (RuntimeError, ValueError) as exc:
                raise AsrError(f"pocketsphinx failed: {exc}") from exc
            text, confidence = self._searches.read_hypothesis(expect)
        return Transcript(
            text=text,
            confidence=confidence,
            engine=self.name,
            audio_seconds=len(pcm16k) / (2 * ENGINE_RATE),
            decode_seconds=time.perf_counter() - start,
        )


def telephone_noise(samples: int, sample_rate: int, seed: int) -> np.ndarray:
    """``samples`` of band-limited (300-3400 Hz) noise at ``NOISE_FLOOR_RMS``, float32."""
    rng = np.random.default_rng(seed)  # deterministic: same audio, same answer
    noise = rng.standard_normal(samples).astype(np.float32)
    spec = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(samples, 1.0 / sample_rate)
    spec[(freqs < TELEPHONE_BAND_HZ[0]) | (freqs > TELEPHONE_BAND_HZ[1])] = 0
    noise = np.fft.irfft(spec, n=samples).astype(np.float32)
    noise *= NOISE_FLOOR_RMS / max(float(np.sqrt(np.mean(noise**2))), 1e-9)
    return noise


def prepare_audio(pcm: bytes, sample_rate: int) -> bytes:
    """16 kHz audio for the wideband model; narrowband input gets the noise floor first."""
    if sample_rate < ENGINE_RATE:
        x = pcm_to_float(pcm)
        pcm = float_to_pcm(x + telephone_noise(len(x), sample_rate, len(x)))
    return resample(pcm, sample_rate, ENGINE_RATE)
