"""Per-turn choice of recognizer, from what the journey expects.

Closed sets (``expect.closed``: digits, yes/no, a few options) go to the fast closed-grammar
engine (pocketsphinx by default, Vosk when a Vosk model is configured); everything else goes to
the accurate open engine (Whisper in worker processes).

With ``cross_check`` (the default) Whisper decodes a closed-set turn too, at the same time, and
its answer is taken when it fits the question (``grammar.prefer_open_engine``): on 8 kHz audio
the grammar always returns an answer of the right shape, right or wrong, and Whisper is the
better listener except for "oh". Once the grammar has answered, Whisper gets at most
``cross_check_wait_ms`` more, and ``cross_check_busy_wait_ms`` (none by default) when the check
still waits in Whisper's queue behind other calls' utterances (every worker decoding): it is a
whole decode away at least, and waiting for it would add the whole wait to such turns of a
loaded gateway for nothing. A check a worker has already taken gets the usual wait. A digit
string waits ``cross_check_digits_wait_ms`` (3 s) for its check, busy or not: the grammar hears
4-6 of 18 spoken order numbers right, Whisper 17 (``bench.asr``), and a wrong number costs the
caller a whole re-ask where the wait costs a second at most. Without
it, a closed-set answer that is empty, does not fit (wrong digit count) or falls under
``fallback_confidence`` is decoded again by Whisper when it runs.

With ``closed_streaming`` (the default, pocketsphinx only) a closed-set turn is decoded while the
caller speaks (``streams.ClosedStreams``): the call opens a stream when its turn starts and
passes the stream's answer as ``grammar``. The streams are then the closed-set engine itself
(``streams.StreamedEngine``): a turn whose stream could not be had or failed is fed to a fresh
stream at once, and no whole-utterance pool runs beside them.

Every engine, Whisper included, is a :class:`~gateway.voice.asr.engines.RoutedEngine` the router
holds by its configured name and its role (``open``, ``closed``, ``checker``); none is special
cased. All decode in worker pools (``closed.ClosedSetProcess``, ``pool.WhisperPool``): the
gateway's threads only wait on sockets, so no decode holds the event loop's GIL. Every call is
bounded by a timeout and every failure is one ``AsrError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Awaitable, Callable

from gateway.config import PACKAGE_ROOT, AsrSettings
from gateway.core.actions import Expect
from gateway.voice.asr.base import AsrError, Transcript, Urgency
from gateway.voice.asr.closed import ClosedSetProcess, closed_workers_for
from gateway.voice.asr.engines import ClosedSetEngine, RoutedEngine, WhisperEngine
from gateway.voice.asr.grammar import answer_of, digit_bounds, one_by_one, plausible, prefer_open_engine, spoken_digits
from gateway.voice.asr.pool import WhisperPool
from gateway.voice.asr.streams import ClosedStream, ClosedStreams, StreamedEngine
from gateway.voice.audio import SAMPLE_WIDTH

log = logging.getLogger(__name__)

MAX_AUDIO_SECONDS = 60.0
"""Longest utterance accepted; the endpointer cuts turns well before (20 s by default)."""
TIMEOUT_SECONDS = 30.0
"""Upper bound on one recognition, queueing included (generous for a loaded 2-core host)."""
SPECULATIVE_EXTRA_WAIT_SECONDS = 0.6
"""A speculative closed-set decode waits this much longer for the checker (the default end-of-turn
window): the streamed grammar answers at the pause itself, and without it a late Whisper left the
grammar's answer standing (on the bench's order numbers, "one zero two zero two zero one" for
"one, zero, zero, zero, one") where the turn, ending 250-600 ms later, had time for Whisper's."""
MIN_WORKER_TIMEOUT_SECONDS = 5.0
"""A closed-set worker silent for this long (or the timeout above, if longer) is restarted."""


def whisper_fits(text: str, expect: Expect, *, loose: bool = False) -> bool:
    """Whisper's transcript answers the closed question by itself: all the digits of a fixed-length
    string, a yes or a no, exactly one option. ``loose`` (the grammar is queued behind other calls):
    any digit count in bounds, accepting the rare "oh" Whisper drops rather than the wait, but not
    a run of zeros, which Whisper miscounts when it writes the digits as a number (it writes them
    one by one after its digits prompt, ``whisper.HINTS``)."""
    if expect.kind == "digits":
        # A fixed length only, unless loose: Whisper writes a spoken "oh" as nothing, which a range hides.
        low, high = digit_bounds(expect)
        heard = spoken_digits(text)
        if loose:
            return low <= len(heard) <= high and ("00" not in heard or one_by_one(text))
        return low == high == len(heard)
    answer = answer_of(text, expect)
    return bool(answer) and "|" not in answer


def resolve_path(name: str, data_dir: Path | None) -> Path:
    """A configured model path: absolute as given, else under the data dir if there, else the project."""
    path = Path(name)
    if path.is_absolute():
        return path
    if data_dir is not None and (data_dir / path).exists():
        return data_dir / path
    return PACKAGE_ROOT / path


class AsrRouter:
    """Speech recognition for calls: one shared set of engines for the whole gateway.

    Each engine configured by name (``voice.asr.open_engine``, ``closed_engine``) is a
    :class:`~gateway.voice.asr.engines.RoutedEngine` in ``engines``; ``checker`` is the engine that
    cross-checks closed sets and takes the closed engine's doubtful answers: Whisper, when it runs
    (configured, or its model installed) and ``fallback`` is on."""

    def __init__(
        self,
        settings: AsrSettings,
        *,
        data_dir: Path | None = None,
        whisper: WhisperPool | None = None,
        timeout_seconds: float = TIMEOUT_SECONDS,
        max_audio_seconds: float = MAX_AUDIO_SECONDS,
        fallback_confidence: float = 0.0,
        fallback: bool = True,
    ) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.timeout_seconds = timeout_seconds
        self.max_audio_seconds = max_audio_seconds
        self.fallback_confidence = fallback_confidence
        self.fallback = fallback
        self.closed_workers = closed_workers_for(settings.closed_workers)
        # Threads only wait (on a worker's socket, or for a worker to come free): two per closed-set
        # worker keep every worker fed with one request in line behind it; the rest wait in the
        # executor's queue, first come first served, where a dropped turn's request is withdrawn.
        self._executor = ThreadPoolExecutor(max_workers=2 * self.closed_workers, thread_name_prefix="asr")
        self.closed_engine = settings.closed_engine
        self.open_engine = settings.open_engine
        if settings.vosk_model_dir and "vosk" not in (self.open_engine, self.closed_engine):
            self.closed_engine = "vosk"  # a configured Vosk model takes the closed sets
        self.streaming = settings.closed_streaming and self.closed_engine == "pocketsphinx"
        self.streams: ClosedStreams | None = ClosedStreams(self.closed_workers) if self.streaming else None
        """Closed-set turns decoded as they are spoken (``closed_streaming``; started with the engines)."""
        self.whisper = WhisperEngine(settings, resolve_path(settings.whisper_model_dir, None), timeout_seconds,
                                     pool=whisper)
        streams = self.streams
        makers: dict[str, Callable[[], RoutedEngine]] = {
            "pocketsphinx": lambda: (StreamedEngine(streams) if streams is not None else
                                     ClosedSetEngine("pocketsphinx", self._pocketsphinx, self._executor,
                                                     timeout_seconds)),
            "vosk": lambda: ClosedSetEngine("vosk", self._vosk, self._executor, timeout_seconds),
            "whisper": lambda: self.whisper,
        }
        self.engines: dict[str, RoutedEngine] = {name: makers[name]() for name in (self.open_engine,
                                                                                   self.closed_engine)}
        self.open: RoutedEngine = self.engines[self.open_engine]
        self.closed: RoutedEngine = self.engines[self.closed_engine]
        self.checker: RoutedEngine | None = None
        """The cross-checking engine (set at ``start``)."""
        self.cross_check = settings.cross_check and fallback
        self.cross_check_wait = settings.cross_check_wait_ms / 1000.0
        self.cross_check_busy_wait = settings.cross_check_busy_wait_ms / 1000.0
        self.cross_check_digits_wait = settings.cross_check_digits_wait_ms / 1000.0
        self._stats = {"fallbacks": 0, "fallback_seconds": 0.0, "cross_checks": 0, "cross_check_late": 0,
                       "cross_check_busy": 0,
                      "open_engine_preferred": 0, "whisper_first": 0, "streamed": 0, "stream_failed": 0}
        self._started = False

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, float]:
        """Counters of what the router did, with the Whisper pool's restarts."""
        streams = self.streams.stats if self.streams is not None else {}
        return {**self._stats, "whisper_restarts": self.whisper.restarts,
                **{f"streams_{k}": v for k, v in streams.items()}}

    def _running(self) -> list[RoutedEngine]:
        """The engines that run: the configured ones, and Whisper to check the closed sets when
        ``fallback`` is on and it is available."""
        running = list(dict.fromkeys(self.engines.values()))
        if self.fallback and self.whisper not in running and self.whisper.available:
            running.append(self.whisper)
        return running

    async def start(self) -> None:
        """Load the engines and warm them (Whisper workers start here, not at the first call)."""
        running = self._running()
        for engine in sorted(running, key=lambda e: e is self.whisper):  # closed-set workers first
            await engine.start()
        self.checker = self.whisper if self.fallback and self.whisper in running else None
        self._started = True

    def _pocketsphinx(self) -> ClosedSetProcess:
        return self._closed_set("pocketsphinx")

    def _vosk(self) -> ClosedSetProcess:
        from gateway.voice.asr.vosk_engine import check_vosk_dir

        if not self.settings.vosk_model_dir:
            raise AsrError("Vosk is selected but voice.asr.vosk_model_dir is empty: set it to a Vosk model directory")
        model_dir = resolve_path(self.settings.vosk_model_dir, self.data_dir)
        check_vosk_dir(model_dir)
        return self._closed_set("vosk", model_dir=str(model_dir))

    def _closed_set(self, name: str, model_dir: str = "") -> ClosedSetProcess:
        """Start a closed-set engine in its worker processes (blocking)."""
        engine = ClosedSetProcess(name, model_dir=model_dir, request_timeout=self._worker_timeout(),
                                  workers=self.closed_workers)
        engine.start()
        return engine

    def _worker_timeout(self) -> float:
        """How long a closed-set worker may take before it is killed and restarted (callers give up
        after ``timeout_seconds`` either way; a short caller timeout must not kill healthy workers)."""
        return max(self.timeout_seconds, MIN_WORKER_TIMEOUT_SECONDS)

    def worker_pids(self) -> list[int]:
        """Process ids of every recognizer worker (closed-set and Whisper), for diagnostics."""
        return [pid for engine in self._running() for pid in engine.worker_pids()]

    async def close(self) -> None:
        """Stop worker processes and threads."""
        for engine in self._running():
            await engine.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._started = False

    # --- recognition -----------------------------------------------------------------------------

    @property
    def saturated(self) -> bool:
        """Every Whisper worker is busy and utterances wait: no time for speculative work."""
        return any(engine.saturated for engine in self._running())

    def open_stream(self, expect: Expect, sample_rate: int) -> ClosedStream | None:
        """A stream to decode a closed-set turn as it is spoken, or None (module docstring)."""
        if self.streams is None or not self.streams.started or not expect.closed:
            return None
        return self.streams.open(expect, sample_rate)

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Expect, *, urgency: Urgency | None = None,
                        grammar: Callable[[], Awaitable[Transcript]] | None = None) -> Transcript:
        """Recognize one utterance of 16-bit mono PCM at ``sample_rate`` for the turn's ``expect``.

        ``urgency``: urgent (the default) for an ended turn; not urgent for a decode in a pause,
        when the turn may not be over (Whisper serves every urgent request waiting before it), made
        urgent by the caller (``Urgency.hasten``) if the turn ends with it. ``grammar``: the
        closed-set answer of a stream fed this turn's audio (``open_stream``); when it fails, the
        audio is decoded whole instead."""
        urgent = urgency if urgency is not None else Urgency()
        if not self._started:
            raise AsrError("speech recognition is not started")
        self._check(pcm, sample_rate)
        if not pcm:
            return Transcript("", 0.0, "none", 0.0, 0.0)
        checker = self.checker if self.checker is not self.closed else None
        if expect.closed and checker is not None and self.cross_check:
            return await self._cross_checked(checker, pcm, sample_rate, expect, urgent, grammar)
        if expect.closed:
            result = await self._grammar(pcm, sample_rate, expect, urgent, grammar)
            if self.closed is not self.whisper:
                result = dataclasses.replace(result, grammar_text=result.text)
            if checker is None or not self._needs_fallback(result, expect):
                return result
            self._stats["fallbacks"] += 1
            log.info("closed-set answer %r (confidence %.2f) does not fit %s; asking %s",
                     "<redacted>" if expect.sensitive else result.text, result.confidence, expect.kind, checker.name)
            again = await checker.recognize(pcm, sample_rate, expect, urgent=urgent)
            self._stats["fallback_seconds"] += again.decode_seconds + again.queue_seconds
            return Transcript(again.text, again.confidence, again.engine, again.audio_seconds,
                              again.decode_seconds + result.decode_seconds, again.queue_seconds,
                              grammar_text=result.grammar_text)
        return await self.open.recognize(pcm, sample_rate, expect, urgent=urgent)

    async def _grammar(self, pcm: bytes, sample_rate: int, expect: Expect, urgent: Urgency,
                       grammar: Callable[[], Awaitable[Transcript]] | None) -> Transcript:
        """The closed-set engine's answer: the stream's when it has one, else a whole decode."""
        if grammar is not None:
            try:
                result = await grammar()
                self._stats["streamed"] += 1
                return result
            except AsrError as exc:
                self._stats["stream_failed"] += 1
                log.info("closed-set stream gave no answer (%s); decoding the turn whole", exc)
        return await self.closed.recognize(pcm, sample_rate, expect, urgent=urgent)

    async def _cross_checked(self, checker: RoutedEngine, pcm: bytes, sample_rate: int, expect: Expect,
                             urgent: Urgency,
                             grammar: Callable[[], Awaitable[Transcript]] | None = None) -> Transcript:
        """A closed-set turn decoded by the closed engine and the checker at once (module docstring)."""
        self._stats["cross_checks"] += 1
        heard = asyncio.ensure_future(checker.recognize(pcm, sample_rate, expect, urgent=urgent))
        try:
            return await self._choose(heard, pcm, sample_rate, expect, urgent, grammar)
        finally:
            # Answered late, or the turn was dropped: a request still queued never reaches a worker.
            heard.cancel()

    async def _choose(self, heard: asyncio.Future[Transcript], pcm: bytes, sample_rate: int,
                      expect: Expect, urgent: Urgency,
                      stream: Callable[[], Awaitable[Transcript]] | None) -> Transcript:
        grammar = asyncio.ensure_future(self._grammar(pcm, sample_rate, expect, urgent, stream))
        try:
            # The checker first with an answer that fits: the grammar's answer could not replace it
            # (prefer_open_engine), so this turn does not wait in the closed engine's queue.
            await asyncio.wait({grammar, heard}, return_when=asyncio.FIRST_COMPLETED)
            if (not grammar.done() and heard.done() and not heard.cancelled() and heard.exception() is None
                    and whisper_fits(heard.result().text, expect, loose=stream is None and self._grammar_queued())):
                self._stats["whisper_first"] += 1
                return heard.result()
            return await self._weigh(heard, grammar, expect, urgent)
        finally:
            grammar.cancel()

    async def _weigh(self, heard: asyncio.Future[Transcript], grammar: asyncio.Future[Transcript],
                     expect: Expect, urgent: Urgency) -> Transcript:
        result = await self._weighed(heard, grammar, expect, urgent)
        if grammar.done() and not grammar.cancelled() and grammar.exception() is None:
            result = dataclasses.replace(result, grammar_text=grammar.result().text)
        return result

    async def _weighed(self, heard: asyncio.Future[Transcript], grammar: asyncio.Future[Transcript],
                       expect: Expect, urgent: Urgency) -> Transcript:
        checker = self.checker.name if self.checker is not None else "the checker"
        try:
            closed: Transcript | None = await grammar
        except AsrError as exc:
            log.warning("%s failed on a %s turn (%s); %s answers alone", self.closed_engine, expect.kind, exc, checker)
            closed = None
        if closed is not None and plausible(closed.text, expect):
            # A speculative decode (in a pause) answers for a turn that ends later: the checker's
            # wait runs from about where the turn ends, not from the pause.
            wait = self.cross_check_wait + (0.0 if urgent.urgent else SPECULATIVE_EXTRA_WAIT_SECONDS)
            # Still queued behind other calls' utterances: the check is a whole decode away at least.
            busy = self.checker is not None and self.checker.waiting(heard)
            if expect.kind == "digits":
                wait = max(wait, self.cross_check_digits_wait)
            elif busy:
                wait = min(wait, self.cross_check_busy_wait)
            done, _ = await asyncio.wait({heard}, timeout=wait)
            if not done:
                self._stats["cross_check_late"] += 1
                self._stats["cross_check_busy"] += int(busy)
                return closed
        try:
            checked = await heard
        except AsrError as exc:
            if closed is None:
                raise
            log.warning("%s failed on a %s turn (%s); the %s answer stands", checker, expect.kind, exc,
                        self.closed_engine)
            return closed
        if log.isEnabledFor(logging.DEBUG) and not expect.sensitive:
            log.debug("%s turn: the grammar heard %r, %s %r", expect.kind, closed.text if closed else None,
                      checker, checked.text)
        if closed is None or prefer_open_engine(closed.text, checked.text, expect):
            if closed is not None and answer_of(checked.text, expect) != answer_of(closed.text, expect):
                self._stats["open_engine_preferred"] += 1  # the checker changed the answer
            return checked
        return closed

    def _grammar_queued(self) -> bool:
        """Requests wait for a closed-set worker to come free (every worker is decoding another call's)."""
        return self.closed.backlog > 0

    def _needs_fallback(self, result: Transcript, expect: Expect) -> bool:
        if not self.fallback:
            return False
        return not plausible(result.text, expect) or result.confidence < self.fallback_confidence

    def _check(self, pcm: bytes, sample_rate: int) -> None:
        if len(pcm) % SAMPLE_WIDTH:
            raise AsrError(f"audio of {len(pcm)} bytes is not 16-bit PCM (odd length)")
        if not 4000 <= sample_rate <= 48000:
            raise AsrError(f"unsupported sample rate {sample_rate} Hz (expected 8000 or 16000)")
        seconds = len(pcm) / (SAMPLE_WIDTH * sample_rate)
        if seconds > self.max_audio_seconds:
            raise AsrError(
                f"utterance of {seconds:.0f} s is longer than the {self.max_audio_seconds:.0f} s limit "
                "(the endpointer should cut turns shorter)"
            )
