"""pocketsphinx 5 on closed grammars (digits, yes/no, a few options): fast and restricted.

pocketsphinx's shipped US English model is wideband: it is fed 16 kHz audio (8 kHz calls are
resampled up; its own 8 kHz settings do not work with this model). Narrowband audio also gets a
faint telephone-band noise floor before decoding: digitally silent frames (what a codec delivers
between words on a clean line) throw the wideband model off, and the floor halves the errors on
the synthesized 8 kHz corpus (bench/asr.py). Each closed ``Expect`` becomes
a JSGF grammar (with the global phrases and a garbage loop: out-of-grammar speech comes back as
"" rather than a forced answer), compiled once and kept as a named search. A decoder is not thread-safe, so
decoding is serialized by a lock; it is fast enough (a few tenths of real time) to share. The
gateway runs it in a worker process (``closed.ClosedSetProcess``): it decodes with the GIL held.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

import numpy as np

from gateway.core.actions import Expect
from gateway.voice.asr.base import ENGINE_RATE, AsrError, Transcript
from gateway.voice.asr.grammar import in_grammar, jsgf_for
from gateway.voice.audio import pcm_to_float, float_to_pcm, resample

log = logging.getLogger(__name__)

MAX_SEARCHES = 64
"""Compiled grammars kept; older ones are dropped (journeys use a handful)."""
NOISE_FLOOR_RMS = 30.0 / 32768.0
"""Noise floor added to narrowband audio: about 55-60 dB under normal speech, inaudible."""
_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[noise]", "<unk>"}


class PocketsphinxEngine:
    """Closed-set recognition with runtime JSGF grammars."""

    name = "pocketsphinx"

    def __init__(self, rejection: bool = True) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise AsrError("pocketsphinx is not installed (pip install pocketsphinx)") from exc
        try:
            self._decoder = Decoder(samprate=ENGINE_RATE, loglevel="FATAL")
        except (RuntimeError, ValueError) as exc:
            raise AsrError(f"pocketsphinx could not load its model: {exc}") from exc
        self._lock = threading.Lock()
        self._searches: list[str] = []
        self.rejection = rejection  # global phrases and the garbage loop in every grammar (grammar.py)

    def _known(self, word: str) -> bool:
        return self._decoder.lookup_word(word) is not None

    def _activate(self, expect: Expect) -> None:
        grammar = jsgf_for(expect, self._known, rejection=self.rejection)
        name = "g" + hashlib.sha1(grammar.encode()).hexdigest()[:16]
        if name not in self._searches:
            try:
                self._decoder.add_jsgf_string(name, grammar)
            except (RuntimeError, ValueError) as exc:
                raise AsrError(f"pocketsphinx rejected the grammar for {expect.kind}: {exc}") from exc
            self._searches.append(name)
            if len(self._searches) > MAX_SEARCHES:
                old = self._searches.pop(0)
                self._decoder.remove_search(old)
        self._decoder.activate_search(name)

    def recognize(self, pcm: bytes, sample_rate: int, expect: Expect) -> Transcript:
        """Decode a whole utterance against the grammar for ``expect`` (blocking)."""
        pcm16k = prepare_audio(pcm, sample_rate)
        if not expect.closed:
            raise AsrError(f"pocketsphinx here only decodes closed sets, not {expect.kind!r}")
        start = time.perf_counter()
        with self._lock:
            try:
                self._activate(expect)
                self._decoder.start_utt()
                self._decoder.process_raw(pcm16k, full_utt=True)
                self._decoder.end_utt()
            except (RuntimeError, ValueError) as exc:
                raise AsrError(f"pocketsphinx failed: {exc}") from exc
            hyp = self._decoder.hyp()
        text = ""
        confidence = 0.0
        if hyp is not None and hyp.hypstr:
            words = [w.split("(")[0] for w in hyp.hypstr.split() if w not in _FILLERS]
            text = in_grammar(" ".join(words), expect) if self.rejection else " ".join(words)
            confidence = max(0.0, min(1.0, float(hyp.prob))) if text else 0.0
        return Transcript(
            text=text,
            confidence=confidence,
            engine=self.name,
            audio_seconds=len(pcm16k) / (2 * ENGINE_RATE),
            decode_seconds=time.perf_counter() - start,
        )


def prepare_audio(pcm: bytes, sample_rate: int) -> bytes:
    """16 kHz audio for the wideband model; narrowband input gets the noise floor first."""
    if sample_rate < ENGINE_RATE:
        x = pcm_to_float(pcm)
        rng = np.random.default_rng(len(x))  # deterministic: same audio, same answer
        noise = rng.standard_normal(len(x)).astype(np.float32)
        spec = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(len(noise), 1.0 / sample_rate)
        spec[(freqs < 300) | (freqs > 3400)] = 0
        noise = np.fft.irfft(spec, n=len(noise)).astype(np.float32)
        noise *= NOISE_FLOOR_RMS / max(float(np.sqrt(np.mean(noise**2))), 1e-9)
        pcm = float_to_pcm(x + noise)
    return resample(pcm, sample_rate, ENGINE_RATE)
