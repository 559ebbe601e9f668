"""Closed-set streams in one process: ``python -m gateway.voice.asr.stream_worker FD CONFIG_JSON``.

Started by ``gateway.voice.asr.streams.ClosedStreams``. Each stream is one caller turn at a
closed question, decoded by pocketsphinx while the caller speaks: the gateway sends the turn's
audio as it arrives, and the answer is in hand a few milliseconds after the turn ends instead of
after a whole-utterance decode queued behind other calls' (it costs about 2 % of a core per
speaking caller). Each stream has a decoder of its own (a decoder decodes one utterance at a
time); decoders load a dictionary of the grammar's words only, taken from one full dictionary
the process keeps, so each costs about 5 MB and 2-4 MB per grammar, and a few are kept for
later streams.

Messages from the gateway (tuples; ``None`` stops the process):

- ``("open", sid, sample_rate, expect)``: a new stream for a closed ``Expect``;
- ``("audio", sid, pcm)``: more of the turn (16-bit mono at the stream's rate);
- ``("snap", sid, token)``: answered ``("snap", sid, token, Transcript)``, the best answer so far:
  the stream's best path, or when that is not an answer (a partial path often is not: "eight
  two zero oh one" came back empty at the pause after it, and right once the turn ended), the
  audio so far decoded whole on a spare decoder (about 45 ms for 3 s);
- ``("end", sid)``: answered ``("final", sid, Transcript)``; the stream is over;
- ``("whole", sid, pcm)``: a whole utterance for a stream just opened, decoded at once as the
  whole-utterance engine does (normalized over the utterance itself), answered as ``end``;
- ``("drop", sid)``: the stream is over, no answer.

A stream that cannot go on is answered ``("error", sid, message)`` and forgotten; later messages
for it are ignored. The process answers ``("ready", pid)`` once loaded (``("failed", message)``
if it cannot load).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import soxr

from gateway.core.actions import Expect
from gateway.voice.asr.base import ENGINE_RATE, MAX_STREAMS, AsrError, Transcript
from gateway.voice.asr.grammar import plausible
from gateway.voice.asr.sphinx import Searches, new_decoder, prepare_audio, telephone_noise
from gateway.voice.asr.worker_loop import announce, messages

MAX_STREAM_SECONDS = 60.0
"""Audio one stream may receive (the endpointer ends turns at 20 s by default)."""
NARROWBAND_CMN = "41.10,26.38,-48.76,27.00,-20.43,-26.63,14.98,-35.57,-2.37,-6.39,-25.59,7.43,-16.51"
"""Where each stream's cepstral mean starts: the mean over whole utterances of telephone speech
(8 kHz, G.711, through the noise floor; ``bench.asr --cmn`` measures it on the open sentences of
the speech corpus). A stream cannot normalize over the whole utterance as a whole-utterance
decode does; started from pocketsphinx's wideband default or from whatever the decoder last
heard, it got 13 of 24 digit strings and 23-24 of 32 yes/no answers right on the 8 kHz corpus,
from this 15 and 25 (whole-utterance decodes without the best-path pass: 15 and 24)."""
MAX_IDLE_DECODERS = 2
"""Decoders kept for the next streams once theirs are over; the rest are freed. A decoder costs
about 5 MB and each grammar compiled in it 2-4 MB, but only 6 ms and 2-7 ms to make again, so
memory follows the streams open now, not the most ever open."""
TRIM_INTERVAL_SECONDS = 2.0
"""Freed decoders' memory is handed back to the system at most this often (``malloc_trim``, ~4 ms):
without it the heap keeps the high-water mark of every stream ever open at once."""
NOISE_TABLE_SECONDS = 4.0
"""The telephone-band noise floor is a precomputed table this long, laid under the audio in turn."""
_GRAMMAR_WORDS = re.compile(r"[a-z][a-z']*")


@dataclass
class _Stream:
    searches: Searches
    expect: Expect
    rate: int
    resampler: Any
    samples: int = 0  # at the stream's own rate
    audio: bytearray = field(default_factory=bytearray)  # as received, for a whole decode in a pause
    started: float = field(default_factory=time.perf_counter)


class StreamDecoders:
    """The streams of one process and the decoders they borrow."""

    name = "pocketsphinx"

    def __init__(self) -> None:
        self._lexicon = new_decoder()  # the full dictionary: which words exist, how they are said
        self._wideband_cmn = self._lexicon.get_cmn()  # the model's own starting point, for 16 kHz
        self._free: list[Searches] = []
        self._streams: dict[int, _Stream] = {}
        self._noise: dict[int, np.ndarray] = {}
        self._trimmed = 0.0
        self._untrimmed = False
        libc = ctypes.util.find_library("c")
        self._malloc_trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None

    def has(self, sid: int) -> bool:
        return sid in self._streams

    def _known(self, word: str) -> bool:
        return self._lexicon.lookup_word(word) is not None

    def _decoder(self) -> Searches:
        if self._free:
            return self._free.pop()
        path = os.devnull  # an empty dictionary: the grammar's words are added as they are needed
        # No best-path rescoring: it cost 50-160 ms at the end of every utterance (the wait this
        # process exists to remove) for 2 more of 24 digit strings right, which the Whisper
        # cross-check catches anyway.
        return Searches(new_decoder(dict=path, bestpath=False), self._known)

    def _add_words(self, searches: Searches, grammar: str) -> None:
        """Teach a small-dictionary decoder every pronunciation of the grammar's words."""
        body = grammar.split(";", 2)[-1]  # past the JSGF header and the grammar name
        decoder = searches.decoder
        for word in set(_GRAMMAR_WORDS.findall(body)):
            if decoder.lookup_word(word) is not None:
                continue
            variant, n = word, 1
            while (phones := self._lexicon.lookup_word(variant)) is not None:
                decoder.add_word(variant, phones, True)
                n += 1
                variant = f"{word}({n})"

    def open(self, sid: int, rate: int, expect: Expect) -> None:
        if sid in self._streams:
            raise AsrError(f"stream {sid} is already open")
        if len(self._streams) >= MAX_STREAMS:
            raise AsrError(f"{MAX_STREAMS} streams are open in this process")
        if not 4000 <= rate <= 48000:
            raise AsrError(f"unsupported sample rate {rate} Hz")
        searches = self._decoder()
        try:
            searches.activate(expect, lambda grammar: self._add_words(searches, grammar))
            searches.decoder.start_utt()
            # Every stream starts from the same mean, not from whatever its decoder heard last.
            searches.decoder.set_cmn(NARROWBAND_CMN if rate < ENGINE_RATE else self._wideband_cmn)
        except (AsrError, RuntimeError, ValueError):
            self._keep(searches)
            raise
        resampler = soxr.ResampleStream(rate, ENGINE_RATE, 1, dtype="int16") if rate != ENGINE_RATE else None
        self._streams[sid] = _Stream(searches, expect, rate, resampler)

    def _noise_for(self, rate: int) -> np.ndarray:
        if rate not in self._noise:
            self._noise[rate] = telephone_noise(int(NOISE_TABLE_SECONDS * rate), rate, rate)
        return self._noise[rate]

    def audio(self, sid: int, pcm: bytes, last: bool = False) -> None:
        stream = self._streams[sid]
        if len(pcm) % 2:
            raise AsrError(f"audio of {len(pcm)} bytes is not 16-bit PCM")
        x = np.frombuffer(pcm, dtype="<i2")
        if stream.samples + len(x) > MAX_STREAM_SECONDS * stream.rate:
            raise AsrError(f"stream {sid} is longer than {MAX_STREAM_SECONDS:.0f} s")
        stream.audio += pcm
        if stream.rate < ENGINE_RATE and len(x):
            # The narrowband noise floor (sphinx.prepare_audio), from a table instead of per utterance.
            table = self._noise_for(stream.rate)
            at = np.arange(stream.samples, stream.samples + len(x)) % len(table)
            x = np.clip(x.astype(np.float32) + table[at] * 32768.0, -32768, 32767).astype(np.int16)
        stream.samples += len(x)
        if stream.resampler is not None:
            x = stream.resampler.resample_chunk(x, last=last)
        if len(x):
            stream.searches.decoder.process_raw(np.ascontiguousarray(x, dtype="<i2").tobytes(), full_utt=False)

    def snapshot(self, sid: int) -> Transcript:
        stream = self._streams[sid]
        start = time.perf_counter()
        text, confidence = stream.searches.read_hypothesis(stream.expect)
        if not plausible(text, stream.expect) and stream.audio:
            text, confidence = self._decode_whole(stream.expect, stream.rate, bytes(stream.audio))
        return self._transcript(stream, text, confidence, time.perf_counter() - start)

    def _decode_whole(self, expect: Expect, rate: int, pcm: bytes) -> tuple[str, float]:
        """``pcm`` decoded at once on a spare decoder (the stream's own goes on undisturbed)."""
        searches = self._decoder()
        try:
            searches.activate(expect, lambda grammar: self._add_words(searches, grammar))
            searches.decoder.start_utt()
            searches.decoder.set_cmn(NARROWBAND_CMN if rate < ENGINE_RATE else self._wideband_cmn)
            searches.decoder.process_raw(prepare_audio(pcm, rate), full_utt=True)
            searches.decoder.end_utt()
            return searches.read_hypothesis(expect)
        finally:
            self._keep(searches)

    def end(self, sid: int) -> Transcript:
        stream = self._streams[sid]
        start = time.perf_counter()
        try:
            self.audio(sid, b"", last=True)  # the resampler's tail
            stream.searches.decoder.end_utt()
            text, confidence = stream.searches.read_hypothesis(stream.expect)
        finally:
            self._release(sid)
        return self._transcript(stream, text, confidence, time.perf_counter() - start)

    def whole(self, sid: int, pcm: bytes) -> Transcript:
        """A whole utterance for a stream fed nothing, decoded at once."""
        stream = self._streams[sid]
        if len(pcm) > MAX_STREAM_SECONDS * stream.rate * 2:
            raise AsrError(f"utterance longer than {MAX_STREAM_SECONDS:.0f} s")
        start = time.perf_counter()
        try:
            text, confidence = self._decode_whole(stream.expect, stream.rate, pcm)
            stream.samples = len(pcm) // 2
        finally:
            self.drop(sid)
        return self._transcript(stream, text, confidence, time.perf_counter() - start)

    def drop(self, sid: int) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            return
        try:
            stream.searches.decoder.end_utt()
        except (RuntimeError, ValueError):
            pass
        self._release(sid)

    def _release(self, sid: int) -> None:
        stream = self._streams.pop(sid)
        self._keep(stream.searches)

    def _keep(self, searches: Searches) -> None:
        """A decoder no stream uses: kept for the next, or freed (and the heap trimmed now and then)."""
        if len(self._free) < MAX_IDLE_DECODERS:
            self._free.append(searches)
            return
        del searches
        self._untrimmed = True
        self.trim()

    def trim(self) -> None:
        """Hand freed memory back to the system, if decoders were freed and it is time."""
        now = time.monotonic()
        if self._untrimmed and self._malloc_trim is not None and now - self._trimmed >= TRIM_INTERVAL_SECONDS:
            self._trimmed, self._untrimmed = now, False
            self._malloc_trim(0)

    def _transcript(self, stream: _Stream, text: str, confidence: float, decode: float) -> Transcript:
        return Transcript(text=text, confidence=confidence, engine=self.name,
                          audio_seconds=stream.samples / stream.rate, decode_seconds=decode)

    def forget(self, sid: int) -> None:
        """A stream that failed: its decoder is dropped (its state is unknown)."""
        stream = self._streams.pop(sid, None)
        if stream is not None:
            try:
                stream.searches.decoder.end_utt()
            except (RuntimeError, ValueError):
                return
            self._keep(stream.searches)


def handle(decoders: StreamDecoders, message: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """One message from the gateway; the reply to send, if any."""
    op, sid = message[0], message[1]
    if op != "open" and not decoders.has(sid):
        return None  # a stream that failed or was dropped: its late audio is ignored
    try:
        if op == "open":
            decoders.open(sid, int(message[2]), message[3])
        elif op == "audio":
            decoders.audio(sid, message[2])
        elif op == "snap":
            return ("snap", sid, message[2], decoders.snapshot(sid))
        elif op == "end":
            return ("final", sid, decoders.end(sid))
        elif op == "whole":
            return ("final", sid, decoders.whole(sid, message[2]))
        elif op == "drop":
            decoders.drop(sid)
        else:
            raise AsrError(f"unknown stream message {op!r}")
    except AsrError as exc:
        decoders.forget(sid)
        return ("error", sid, str(exc))
    except ValueError as exc:  # a grammar it cannot build (options without a known word), bad audio
        decoders.forget(sid)
        return ("error", sid, f"pocketsphinx failed: {exc}")
    except (RuntimeError, TypeError, IndexError) as exc:
        decoders.forget(sid)
        return ("error", sid, f"pocketsphinx failed: {type(exc).__name__}: {exc}")
    return None


def _worker_main(conn: Connection, _config: dict[str, Any]) -> None:
    """Load, warm, then serve stream messages in order until told to stop.

    Unlike the whole-utterance recognizers, this process runs at the gateway's own priority: its
    work is small and in the path of every closed-set answer, and it must not queue behind
    Whisper's decodes on a busy machine."""

    def load() -> StreamDecoders:
        decoders = StreamDecoders()
        decoders.open(0, 8000, Expect(kind="yesno"))  # warm: load the model, compile a grammar
        decoders.audio(0, b"\x00\x00" * 8000)
        decoders.end(0)
        return decoders

    decoders = announce(conn, load, nice=False)
    if decoders is None:
        return
    for message in messages(conn, idle=decoders.trim, idle_seconds=TRIM_INTERVAL_SECONDS):
        reply = handle(decoders, message)
        if reply is not None:
            conn.send(reply)


if __name__ == "__main__":
    _worker_main(Connection(int(sys.argv[1])), json.loads(sys.argv[2]))
