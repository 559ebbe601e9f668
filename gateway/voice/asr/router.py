"""Per-turn choice of recognizer, from what the journey expects.

Closed sets (``expect.closed``: digits, yes/no, a few options) go to the fast closed-grammar
engine (pocketsphinx by default, Vosk when a Vosk model is configured); everything else goes to
the accurate open engine (Whisper in worker processes).

With ``cross_check`` (the default) Whisper decodes a closed-set turn too, at the same time, and
its answer is taken when it fits the question (``grammar.prefer_open_engine``): on 8 kHz audio
the grammar always returns an answer of the right shape, right or wrong, and Whisper is the
better listener except for "oh". Once the grammar has answered, Whisper gets at most
``cross_check_wait_ms`` more, so a loaded gateway answers closed sets as fast as before. Without
it, a closed-set answer that is empty, does not fit (wrong digit count) or falls under
``fallback_confidence`` is decoded again by Whisper when it runs. Both engines decode in worker processes (``closed.ClosedSetProcess``,
``pool.WhisperPool``): the gateway's threads only wait on sockets, so no decode holds the event
loop's GIL. Every call is bounded by a timeout and every failure is one ``AsrError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from gateway.config import PACKAGE_ROOT, AsrSettings
from gateway.core.actions import Expect
from gateway.voice.asr.base import ENGINE_RATE, AsrError, Engine, Transcript
from gateway.voice.asr.closed import ClosedSetProcess
from gateway.voice.asr.grammar import answer_of, digit_bounds, plausible, prefer_open_engine, spoken_digits
from gateway.voice.asr.pool import WhisperPool
from gateway.voice.asr.whisper import check_model_dir
from gateway.voice.audio import SAMPLE_WIDTH, resample

log = logging.getLogger(__name__)

MAX_AUDIO_SECONDS = 60.0
"""Longest utterance accepted; the endpointer cuts turns well before (20 s by default)."""
TIMEOUT_SECONDS = 30.0
"""Upper bound on one recognition, queueing included (generous for a loaded 2-core host)."""
MIN_WORKER_TIMEOUT_SECONDS = 5.0
"""A closed-set worker silent for this long (or the timeout above, if longer) is restarted."""
NO_SPEECH_PROB = 0.6
"""Whisper's own no-speech threshold: above it, with low confidence, the turn is silence."""
LOW_CONFIDENCE = 0.35


def whisper_fits(text: str, expect: Expect, *, loose: bool = False) -> bool:
    """Whisper's transcript answers the closed question by itself: all the digits of a fixed-length
    string, a yes or a no, exactly one option. ``loose`` (the grammar is queued behind other calls):
    any digit count in bounds, accepting the rare "oh" Whisper drops rather than the wait."""
    if expect.kind == "digits":
        # A fixed length only, unless loose: Whisper writes a spoken "oh" as nothing, which a range hides.
        low, high = digit_bounds(expect)
        count = len(spoken_digits(text))
        return low <= count <= high if loose else low == high == count
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
    """Speech recognition for calls: one shared set of engines for the whole gateway."""

    def __init__(
        self,
        settings: AsrSettings,
        *,
        data_dir: Path | None = None,
        whisper: WhisperPool | None = None,
        engines: dict[str, Engine] | None = None,
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
        self.whisper_model_dir = resolve_path(settings.whisper_model_dir, None)
        self._whisper = whisper
        self._own_whisper = whisper is None
        self._engines: dict[str, Engine] = dict(engines or {})
        self._own_engines: list[ClosedSetProcess] = []
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="asr")
        self.closed_engine = settings.closed_engine
        self.open_engine = settings.open_engine
        if settings.vosk_model_dir and "vosk" not in (self.open_engine, self.closed_engine):
            self.closed_engine = "vosk"  # a configured Vosk model takes the closed sets
        self.cross_check = settings.cross_check and fallback
        self.cross_check_wait = settings.cross_check_wait_ms / 1000.0
        self._stats = {"fallbacks": 0, "fallback_seconds": 0.0, "cross_checks": 0, "cross_check_late": 0,
                      "open_engine_preferred": 0, "whisper_first": 0}
        self._started = False

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, float]:
        """Counters of what the router did, with the Whisper pool's restarts."""
        restarts = self._whisper.stats["restarts"] if self._whisper is not None else 0
        return {**self._stats, "whisper_restarts": restarts}

    def _needs_whisper(self) -> bool:
        if "whisper" in (self.open_engine, self.closed_engine):
            return True
        return self.fallback and (self._whisper is not None or (self.whisper_model_dir / "model.bin").is_file())

    async def start(self) -> None:
        """Load the engines and warm them (Whisper workers start here, not at the first call)."""
        loop = asyncio.get_running_loop()
        for name in {self.open_engine, self.closed_engine} - {"whisper"}:
            if name not in self._engines:
                self._engines[name] = await loop.run_in_executor(self._executor, self._load, name)
        if self.closed_engine != "whisper" and not isinstance(self._engines[self.closed_engine], ClosedSetProcess):
            await loop.run_in_executor(  # an engine passed in is warmed here; worker processes warm themselves
                self._executor, self._engines[self.closed_engine].recognize, b"\x00\x00" * 8000, 8000,
                Expect(kind="yesno"),
            )
        if self._needs_whisper():
            if self._whisper is None:
                check_model_dir(self.whisper_model_dir)
                self._whisper = WhisperPool(
                    self.whisper_model_dir,
                    workers=self.settings.workers,
                    window_seconds=self.settings.whisper_window_seconds,
                    beam_size=self.settings.whisper_beam_size,
                    language=self.settings.language,
                    decode_timeout=self.timeout_seconds,
                )
            if not self._whisper.started:
                await loop.run_in_executor(self._executor, self._whisper.start)
        self._started = True

    def _load(self, name: str) -> Engine:
        """Start engine ``name`` in its own worker process (blocking)."""
        if name == "pocketsphinx":
            engine = ClosedSetProcess(name, request_timeout=self._worker_timeout())
        elif name == "vosk":
            from gateway.voice.asr.vosk_engine import check_vosk_dir

            if not self.settings.vosk_model_dir:
                raise AsrError("Vosk is selected but voice.asr.vosk_model_dir is empty: set it to a Vosk model directory")
            model_dir = resolve_path(self.settings.vosk_model_dir, self.data_dir)
            check_vosk_dir(model_dir)
            engine = ClosedSetProcess(name, model_dir=str(model_dir), request_timeout=self._worker_timeout())
        else:
            raise AsrError(f"unknown recognizer {name!r}")
        engine.start()
        self._own_engines.append(engine)
        return engine

    def _worker_timeout(self) -> float:
        """How long a closed-set worker may take before it is killed and restarted (callers give up
        after ``timeout_seconds`` either way; a short caller timeout must not kill healthy workers)."""
        return max(self.timeout_seconds, MIN_WORKER_TIMEOUT_SECONDS)

    def worker_pids(self) -> list[int]:
        """Process ids of every recognizer worker (closed-set and Whisper), for diagnostics."""
        pids = [pid for engine in self._own_engines for pid in engine.worker_pids()]
        if self._whisper is not None and self._whisper.started:
            pids += self._whisper.worker_pids()
        return pids

    async def close(self) -> None:
        """Stop worker processes and threads."""
        loop = asyncio.get_running_loop()
        if self._whisper is not None and self._own_whisper:
            await loop.run_in_executor(None, self._whisper.close)
        for engine in self._own_engines:
            await loop.run_in_executor(None, engine.close)
            self._engines = {k: v for k, v in self._engines.items() if v is not engine}
        self._own_engines.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._started = False

    # --- recognition -----------------------------------------------------------------------------

    @property
    def saturated(self) -> bool:
        """Every Whisper worker is busy and utterances wait: no time for speculative work."""
        return self._whisper is not None and self._whisper.saturated

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Expect, *, speculative: bool = False) -> Transcript:
        """Recognize one utterance of 16-bit mono PCM at ``sample_rate`` for the turn's ``expect``.

        ``speculative``: the turn may not be over (a decode in a pause); Whisper serves every
        ended turn waiting before it."""
        urgent = not speculative
        if not self._started:
            raise AsrError("speech recognition is not started")
        self._check(pcm, sample_rate)
        if not pcm:
            return Transcript("", 0.0, "none", 0.0, 0.0)
        if expect.closed and self.closed_engine != "whisper" and self.cross_check and self._whisper is not None:
            return await self._cross_checked(pcm, sample_rate, expect, urgent)
        if expect.closed and self.closed_engine != "whisper":
            result = await self._run_engine(self.closed_engine, pcm, sample_rate, expect)
            if not self._needs_fallback(result, expect):
                return result
            self._stats["fallbacks"] += 1
            log.info("closed-set answer %r (confidence %.2f) does not fit %s; asking whisper",
                     "<redacted>" if expect.sensitive else result.text, result.confidence, expect.kind)
            again = await self._run_whisper(pcm, sample_rate, urgent=urgent)
            self._stats["fallback_seconds"] += again.decode_seconds + again.queue_seconds
            return Transcript(again.text, again.confidence, again.engine, again.audio_seconds,
                              again.decode_seconds + result.decode_seconds, again.queue_seconds)
        if self.open_engine == "whisper" or (expect.closed and self.closed_engine == "whisper"):
            return await self._run_whisper(pcm, sample_rate, urgent=urgent)
        return await self._run_engine(self.open_engine, pcm, sample_rate, expect)

    async def _cross_checked(self, pcm: bytes, sample_rate: int, expect: Expect, urgent: bool = True) -> Transcript:
        """A closed-set turn decoded by the closed engine and Whisper at once (module docstring)."""
        self._stats["cross_checks"] += 1
        queued: list[Future] = []
        heard = asyncio.ensure_future(self._run_whisper(pcm, sample_rate, queued, urgent=urgent))
        try:
            return await self._choose(heard, pcm, sample_rate, expect)
        finally:
            # Answered late, or the turn was dropped: a request still queued never reaches a worker.
            for request in queued:
                request.cancel()
            heard.cancel()

    async def _choose(self, heard: asyncio.Future[Transcript], pcm: bytes, sample_rate: int,
                      expect: Expect) -> Transcript:
        grammar = asyncio.ensure_future(self._run_engine(self.closed_engine, pcm, sample_rate, expect))
        try:
            # Whisper first with an answer that fits: the grammar's answer could not replace it
            # (prefer_open_engine), so this turn does not wait in the closed engine's queue.
            await asyncio.wait({grammar, heard}, return_when=asyncio.FIRST_COMPLETED)
            if (not grammar.done() and heard.done() and not heard.cancelled() and heard.exception() is None
                    and whisper_fits(heard.result().text, expect, loose=self._grammar_queued())):
                self._stats["whisper_first"] += 1
                return heard.result()
            return await self._weigh(heard, grammar, expect)
        finally:
            grammar.cancel()

    async def _weigh(self, heard: asyncio.Future[Transcript], grammar: asyncio.Future[Transcript],
                     expect: Expect) -> Transcript:
        try:
            closed: Transcript | None = await grammar
        except AsrError as exc:
            log.warning("%s failed on a %s turn (%s); whisper answers alone", self.closed_engine, expect.kind, exc)
            closed = None
        if closed is not None and plausible(closed.text, expect):
            done, _ = await asyncio.wait({heard}, timeout=self.cross_check_wait)
            if not done:
                self._stats["cross_check_late"] += 1
                return closed
        try:
            whisper = await heard
        except AsrError as exc:
            if closed is None:
                raise
            log.warning("whisper failed on a %s turn (%s); the %s answer stands", expect.kind, exc, self.closed_engine)
            return closed
        if closed is None or prefer_open_engine(closed.text, whisper.text, expect):
            if closed is not None and answer_of(whisper.text, expect) != answer_of(closed.text, expect):
                self._stats["open_engine_preferred"] += 1  # whisper changed the answer
            return whisper
        return closed

    def _grammar_queued(self) -> bool:
        """Other calls' requests wait for the closed-set worker (it serves one at a time)."""
        return getattr(self._engines.get(self.closed_engine), "waiting", 0) > 1

    def _needs_fallback(self, result: Transcript, expect: Expect) -> bool:
        if not self.fallback or self._whisper is None:
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

    async def _run_engine(self, name: str, pcm: bytes, sample_rate: int, expect: Expect) -> Transcript:
        engine = self._engines.get(name)
        if engine is None:
            raise AsrError(f"recognizer {name!r} is not loaded")
        loop = asyncio.get_running_loop()
        queued = time.perf_counter()
        future = loop.run_in_executor(self._executor, self._call, engine, pcm, sample_rate, expect, queued)
        try:
            result, queue_seconds = await asyncio.wait_for(future, self.timeout_seconds)
        except asyncio.TimeoutError as exc:
            raise AsrError(f"{name} gave no result within {self.timeout_seconds:.0f} s") from exc
        return Transcript(result.text, result.confidence, result.engine, result.audio_seconds,
                          result.decode_seconds, queue_seconds)

    @staticmethod
    def _call(engine: Engine, pcm: bytes, sample_rate: int, expect: Expect, queued: float) -> tuple[Transcript, float]:
        started = time.perf_counter()
        try:
            result = engine.recognize(pcm, sample_rate, expect)
            # The wait for a thread, plus what the engine spent not decoding (a worker process
            # serves one request at a time: another call's decode is this call's queue).
            waited = (started - queued) + max(0.0, time.perf_counter() - started - result.decode_seconds)
            return result, waited
        except AsrError:
            raise
        except Exception as exc:  # noqa: BLE001 - any engine failure becomes one AsrError
            raise AsrError(f"{engine.name} failed: {type(exc).__name__}: {exc}") from exc

    async def _run_whisper(self, pcm: bytes, sample_rate: int, queued: list[Future] | None = None, *,
                           urgent: bool = True) -> Transcript:
        """Whisper's transcript; ``queued`` receives the pool's request, so that a caller can
        withdraw it at once (``Future.cancel`` is a no-op once decoding has started)."""
        if self._whisper is None:
            raise AsrError("Whisper is not running")
        pcm16k = resample(pcm, sample_rate, ENGINE_RATE)
        request = self._whisper.submit(pcm16k, urgent=urgent)
        if queued is not None:
            queued.append(request)
        future = asyncio.wrap_future(request)
        try:
            result, queue_seconds = await asyncio.wait_for(future, self.timeout_seconds)
        except asyncio.TimeoutError as exc:
            raise AsrError(f"whisper gave no result within {self.timeout_seconds:.0f} s") from exc
        text = result.text
        if result.no_speech_prob > NO_SPEECH_PROB and result.confidence < LOW_CONFIDENCE:
            text = ""
        return Transcript(
            text=text,
            confidence=result.confidence,
            engine="whisper",
            audio_seconds=len(pcm16k) / (SAMPLE_WIDTH * ENGINE_RATE),
            decode_seconds=result.decode_seconds,
            queue_seconds=queue_seconds,
        )
