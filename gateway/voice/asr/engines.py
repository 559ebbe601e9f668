"""The recognizers as the router holds them: one asynchronous interface, :class:`RoutedEngine`.

Two implementations:

- :class:`ClosedSetEngine`: pocketsphinx or Vosk in worker processes (``ClosedSetProcess``, a
  blocking :class:`~gateway.voice.asr.base.Engine`) called from one of the router's threads,
  which only waits on a worker's socket. Its queue time is the thread's wait plus the wait for a
  worker to come free (each serves one request at a time: ``backlog`` counts the requests beyond
  the workers).
- :class:`WhisperEngine`: the Whisper worker pool (``pool.WhisperPool``), asked directly: a
  request queued behind others is served first when ``urgent`` (an ended turn before a
  speculative one), and withdrawn from the queue when the caller stops waiting for it.

Every call is bounded by the engine's timeout and every failure is one ``AsrError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, Callable, Protocol

from gateway.config import AsrSettings
from gateway.core.actions import Expect
from gateway.voice.asr.base import ENGINE_RATE, AsrError, Engine, Transcript, Urgency
from gateway.voice.asr.closed import ClosedSetProcess
from gateway.voice.asr.pool import WhisperPool
from gateway.voice.asr.whisper import check_model_dir
from gateway.voice.audio import SAMPLE_WIDTH, resample

log = logging.getLogger(__name__)

NO_SPEECH_PROB = 0.6
"""Whisper's own no-speech threshold: above it, with low confidence, the turn is silence."""
LOW_CONFIDENCE = 0.35


class RoutedEngine(Protocol):
    """A recognizer behind the router (see the module docstring)."""

    name: str

    async def start(self) -> None:
        """Load (and warm) the engine; ``AsrError`` when it cannot."""
        ...

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Expect, *,
                        urgent: bool | Urgency = True) -> Transcript:
        """One utterance of 16-bit mono PCM; ``urgent`` False for a speculative decode, or an
        ``Urgency`` hastened when the turn ends. Cancelling the call withdraws a request that
        still waits for a worker."""
        ...

    @property
    def backlog(self) -> int:
        """Requests in the engine now that no worker can take (they wait for one to come free)."""
        ...

    @property
    def saturated(self) -> bool:
        """Every worker is busy and requests wait: no time for speculative work."""
        ...

    def waiting(self, request: asyncio.Task[Transcript]) -> bool:
        """``request`` (a task running this engine's ``recognize``) still waits for a worker behind
        other requests: its answer is at least a whole decode away."""
        ...

    @property
    def restarts(self) -> int:
        ...

    def worker_pids(self) -> list[int]:
        ...

    async def close(self) -> None:
        ...


class ClosedSetEngine:
    """A closed-set engine in its worker process (``ClosedSetProcess``, made by ``make`` in a
    router thread at ``start``), called from one of the router's threads (``executor``)."""

    def __init__(self, name: str, make: Callable[[], ClosedSetProcess], executor: Executor,
                 timeout_seconds: float) -> None:
        self.name = name
        self._make = make
        self._executor = executor
        self.timeout_seconds = timeout_seconds
        self._process: ClosedSetProcess | None = None
        self._requests = 0  # recognize() calls under way, queued for a thread or a worker included

    async def start(self) -> None:
        if self._process is None:  # the worker warms itself before it says it is ready
            self._process = await asyncio.get_running_loop().run_in_executor(self._executor, self._make)

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Expect, *,
                        urgent: bool | Urgency = True) -> Transcript:
        process = self._process
        if process is None:
            raise AsrError(f"recognizer {self.name!r} is not loaded")
        loop = asyncio.get_running_loop()
        queued = time.perf_counter()
        self._requests += 1
        try:
            future = loop.run_in_executor(self._executor, _call, process, pcm, sample_rate, expect, queued)
            result, queue_seconds = await asyncio.wait_for(future, self.timeout_seconds)
        except asyncio.TimeoutError as exc:
            raise AsrError(f"{self.name} gave no result within {self.timeout_seconds:.0f} s") from exc
        finally:
            self._requests -= 1
        return Transcript(result.text, result.confidence, result.engine, result.audio_seconds,
                          result.decode_seconds, queue_seconds)

    @property
    def backlog(self) -> int:
        return max(0, self._requests - self._process.size) if self._process is not None else 0

    @property
    def saturated(self) -> bool:
        return False  # a few tens of milliseconds per request: never worth refusing work

    def waiting(self, request: asyncio.Task[Transcript]) -> bool:
        return False  # not tracked per request: a few tens of milliseconds each

    @property
    def restarts(self) -> int:
        return self._process.stats["restarts"] if self._process is not None else 0

    def worker_pids(self) -> list[int]:
        return self._process.worker_pids() if self._process is not None else []

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await asyncio.get_running_loop().run_in_executor(None, process.close)


def _call(engine: Engine, pcm: bytes, sample_rate: int, expect: Expect, queued: float) -> tuple[Transcript, float]:
    started = time.perf_counter()
    try:
        result = engine.recognize(pcm, sample_rate, expect)
        # The wait for a thread, plus what the engine spent not decoding (each worker process
        # serves one request at a time: the wait for a free worker is this call's queue).
        waited = (started - queued) + max(0.0, time.perf_counter() - started - result.decode_seconds)
        return result, waited
    except AsrError:
        raise
    except Exception as exc:  # noqa: BLE001 - any engine failure becomes one AsrError
        raise AsrError(f"{engine.name} failed: {type(exc).__name__}: {exc}") from exc


class WhisperEngine:
    """Whisper in worker processes (``pool.WhisperPool``; one given, or made at ``start``)."""

    name = "whisper"

    def __init__(self, settings: AsrSettings, model_dir: Path, timeout_seconds: float,
                 pool: WhisperPool | None = None) -> None:
        self.settings = settings
        self.model_dir = model_dir
        self.timeout_seconds = timeout_seconds
        self.pool = pool
        self._owned = pool is None
        self._pooled: dict[asyncio.Task[Any], Future[Any]] = {}  # recognize() tasks -> their pool requests

    @property
    def available(self) -> bool:
        """A pool was given, or the model is installed (so it can cross-check closed sets)."""
        return self.pool is not None or (self.model_dir / "model.bin").is_file()

    async def start(self) -> None:
        if self.pool is None:
            check_model_dir(self.model_dir)
            cfg = self.settings
            self.pool = WhisperPool(self.model_dir, workers=cfg.workers, window_seconds=cfg.whisper_window_seconds,
                                    beam_size=cfg.whisper_beam_size, language=cfg.language,
                                    decode_timeout=self.timeout_seconds)
        if not self.pool.started:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.start)

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Expect, *,
                        urgent: bool | Urgency = True) -> Transcript:
        if self.pool is None:
            raise AsrError("Whisper is not running")
        pcm16k = resample(pcm, sample_rate, ENGINE_RATE)
        request = self.pool.submit(pcm16k, urgent=urgent, hint="digits" if expect.kind == "digits" else "")
        task = asyncio.current_task()
        if task is not None:
            self._pooled[task] = request
        try:
            result, queue_seconds = await asyncio.wait_for(asyncio.wrap_future(request), self.timeout_seconds)
        except asyncio.TimeoutError as exc:
            raise AsrError(f"whisper gave no result within {self.timeout_seconds:.0f} s") from exc
        finally:
            request.cancel()  # answered late, or the turn was dropped: still queued, it never reaches a worker
            if task is not None:
                self._pooled.pop(task, None)
        text = result.text
        if result.no_speech_prob > NO_SPEECH_PROB and result.confidence < LOW_CONFIDENCE:
            text = ""
        return Transcript(text=text, confidence=result.confidence, engine=self.name,
                          audio_seconds=len(pcm16k) / (SAMPLE_WIDTH * ENGINE_RATE),
                          decode_seconds=result.decode_seconds, queue_seconds=queue_seconds)

    @property
    def backlog(self) -> int:
        return 0  # requests are dispatched by priority among the pool's workers, not queued behind one

    @property
    def saturated(self) -> bool:
        return self.pool is not None and self.pool.saturated

    def waiting(self, request: asyncio.Task[Transcript]) -> bool:
        """Queued in the pool behind other utterances while every worker decodes (not yet taken)."""
        pooled = self._pooled.get(request)
        return pooled is not None and not pooled.running() and not pooled.done() and self.saturated

    @property
    def restarts(self) -> int:
        return int(self.pool.stats["restarts"]) if self.pool is not None else 0

    def worker_pids(self) -> list[int]:
        return self.pool.worker_pids() if self.pool is not None and self.pool.started else []

    async def close(self) -> None:
        if self.pool is not None and self._owned:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.close)
