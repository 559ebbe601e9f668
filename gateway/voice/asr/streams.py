"""Closed-set recognition that streams while the caller speaks (the gateway's side).

``ClosedStreams`` keeps one stream process per core (``gateway.voice.asr.stream_worker``), each
decoding many calls' turns at once, and hands out a ``ClosedStream`` per caller turn at a closed
question. The call feeds the stream its audio frame by frame as the endpointer collects it;
``snapshot`` is the best answer so far (judged in a pause, to end a complete answer sooner) and
``finish`` the answer once the turn is over, a few milliseconds later, with nothing queued
behind other calls' utterances. The event loop never blocks: messages go out through one
writer thread per process and answers come back through one reader thread.

When every process is full or restarting, a stream falls behind, or a process dies (it is
restarted; its streams fail), the turn is fed whole to a fresh stream (``StreamedEngine``, the
router's closed-set engine), and when none can be had Whisper answers the turn alone
(``AsrRouter``). Every wait is bounded; a failure is an ``AsrError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.core.actions import Expect
from gateway.voice.asr.base import MAX_STREAMS, AsrError, Transcript, Urgency
from gateway.voice.asr.pool import START_TIMEOUT_SECONDS, WorkerProcess, start_workers

log = logging.getLogger(__name__)

MODULE = "gateway.voice.asr.stream_worker"
CHUNK_MS = 100
"""Audio goes to the stream process in pieces this long (the answer lags the caller by at most
this; shorter pieces cost more messages for the same decoding)."""
ANSWER_TIMEOUT_SECONDS = 2.0
"""A snapshot or a final answer normally comes back in milliseconds; past this (plus
``DECODE_SHARE`` of the audio fed, for an utterance fed whole) the stream is given up."""
DECODE_SHARE = 0.1
"""pocketsphinx decodes a grammar in 2-5 % of real time; an utterance fed at once may take this."""
MAX_QUEUED_MESSAGES = 2000
"""Messages waiting for one process's writer (about 8 s of audio from 24 speaking callers): a
process this far behind is stuck, and new audio for it fails its streams instead of piling up."""
MAX_PROCESSES = 4
RESTART_PAUSE_SECONDS = 1.0
"""Between two failed attempts to restart a stream process."""


def _call(stream: "ClosedStream", fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` on the stream's event loop (nothing to do once that loop is closed)."""
    try:
        stream.loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


@dataclass
class _Slot:
    """One stream process, its writer's queue and the streams it decodes."""

    index: int
    worker: WorkerProcess | None = None
    ready: bool = False
    outbox: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    queued: int = 0
    streams: dict[int, "ClosedStream"] = field(default_factory=dict)


class ClosedStream:
    """One caller turn decoded as it is spoken (see the module docstring)."""

    def __init__(self, pool: "ClosedStreams", slot: _Slot, sid: int, expect: Expect, sample_rate: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.slot = slot
        self.sid = sid
        self.expect = expect
        self.sample_rate = sample_rate
        self.loop = loop
        self.failed = ""
        self.closed = False
        self._chunk = sample_rate * 2 * CHUNK_MS // 1000
        self._buffer = bytearray()
        self._fed = 0  # bytes
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Transcript]] = {}
        self._final: asyncio.Future[Transcript] | None = None

    def feed(self, pcm: bytes) -> None:
        """More of the turn's audio (16-bit mono at the call's rate); never blocks."""
        if self.closed or self.failed:
            return
        self._buffer += pcm
        self._fed += len(pcm)
        if len(self._buffer) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            self.pool.send(self, ("audio", self.sid, data))

    async def snapshot(self) -> Transcript:
        """The best answer to the audio fed so far (the turn goes on)."""
        if self.closed:
            raise AsrError("the stream is over")
        token = next(self._tokens)
        future = self.loop.create_future()
        self._waiting[token] = future
        self._flush()
        self.pool.send(self, ("snap", self.sid, token))
        try:
            return await self._answer(future)
        finally:
            self._waiting.pop(token, None)

    async def finish(self, whole: bytes | None = None) -> Transcript:
        """The turn is over: its answer (``AsrError`` when the stream failed or fell behind).
        ``whole``: the whole utterance, to a stream fed nothing, decoded at once."""
        if self.closed:
            raise AsrError("the stream is over")
        self._final = self.loop.create_future()
        if whole is not None:
            self._fed += len(whole)
            self.pool.send(self, ("whole", self.sid, whole))
        else:
            self._flush()
            self.pool.send(self, ("end", self.sid))
        self.closed = True
        try:
            return await self._answer(self._final)
        finally:
            self.pool.forget(self)

    async def _answer(self, future: asyncio.Future[Transcript]) -> Transcript:
        if self.failed:
            raise AsrError(self.failed)
        limit = ANSWER_TIMEOUT_SECONDS + DECODE_SHARE * self._fed / (2 * self.sample_rate)
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except asyncio.TimeoutError:
            self.fail(f"the closed-set stream gave no answer within {limit:.1f} s")
            raise AsrError(self.failed) from None

    def drop(self) -> None:
        """The turn needs no answer from this stream (it was answered otherwise, or abandoned)."""
        if not self.closed:
            self.closed = True
            if not self.failed:
                self.pool.send(self, ("drop", self.sid))
            self.pool.forget(self)

    def fail(self, reason: str) -> None:
        """The stream cannot go on: every wait for it ends with ``AsrError(reason)``."""
        if self.failed:
            return
        self.failed = reason
        for future in [*self._waiting.values(), self._final]:
            if future is not None and not future.done():
                future.set_exception(AsrError(reason))
                future.exception()  # retrieved: whoever still waits gets it; nobody else must
        if not self.closed:
            self.closed = True
            self.pool.send(self, ("drop", self.sid))
            self.pool.forget(self)

    def _deliver(self, message: tuple[Any, ...]) -> None:
        """An answer from the process (on the event loop)."""
        kind = message[0]
        if kind == "error":
            self.fail(str(message[2]))
            return
        future = self._waiting.get(message[2]) if kind == "snap" else self._final
        if future is not None and not future.done():
            future.set_result(message[-1])


class ClosedStreams:
    """The stream processes (``workers``, at most ``MAX_PROCESSES``) and their open streams."""

    name = "pocketsphinx"

    def __init__(self, workers: int = 1) -> None:
        self.size = max(1, min(workers, MAX_PROCESSES))
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._ids = itertools.count(1)
        self._closed = False
        self.stats = {"opened": 0, "refused": 0, "failed": 0, "restarts": 0}

    @property
    def started(self) -> bool:
        return bool(self._slots) and not self._closed

    def start(self) -> None:
        """Start every process and its threads (blocking; ``AsrError`` if pocketsphinx cannot load)."""
        workers = start_workers({}, self.size, module=MODULE, label="closed-set stream")
        for i, worker in enumerate(workers):
            slot = _Slot(i, worker, ready=True)
            self._slots.append(slot)
            threading.Thread(target=self._write, args=(slot,), name=f"stream-out-{i}", daemon=True).start()
            threading.Thread(target=self._read, args=(slot,), name=f"stream-in-{i}", daemon=True).start()
        log.info("closed-set streams ready: %d process(es)", self.size)

    @property
    def open_streams(self) -> int:
        with self._lock:
            return sum(len(slot.streams) for slot in self._slots)

    def open(self, expect: Expect, sample_rate: int) -> ClosedStream | None:
        """A stream for one turn at a closed question, or None when no process can take one now."""
        if not expect.closed or self._closed:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            ready = [s for s in self._slots if s.ready and len(s.streams) < MAX_STREAMS
                     and s.queued < MAX_QUEUED_MESSAGES // 2]
            if not ready:
                self.stats["refused"] += 1
                return None
            slot = min(ready, key=lambda s: len(s.streams))
            stream = ClosedStream(self, slot, next(self._ids), expect, sample_rate, loop)
            slot.streams[stream.sid] = stream
            self.stats["opened"] += 1
        self.send(stream, ("open", stream.sid, sample_rate, expect))
        return stream

    def send(self, stream: ClosedStream, message: tuple[Any, ...]) -> None:
        slot = stream.slot
        with self._lock:
            stuck = not slot.ready or slot.queued >= MAX_QUEUED_MESSAGES
            if not stuck:
                slot.queued += 1
                slot.outbox.put(message)
        if stuck and message[0] != "drop":
            stream.fail("the closed-set stream process is restarting or behind")

    def forget(self, stream: ClosedStream) -> None:
        with self._lock:
            stream.slot.streams.pop(stream.sid, None)

    # --- the threads ------------------------------------------------------------------------
    def _write(self, slot: _Slot) -> None:
        while True:
            message = slot.outbox.get()
            with self._lock:
                slot.queued -= 1
                worker = slot.worker
            if message is None:
                return
            try:
                if worker is not None:
                    worker.conn.send(message)
            except (OSError, ValueError):
                pass  # the reader sees the process gone and restarts it

    def _read(self, slot: _Slot) -> None:
        while not self._closed:
            worker = slot.worker
            try:
                message = worker.conn.recv() if worker is not None else None
            except (EOFError, OSError):
                message = None
            if message is not None:
                with self._lock:
                    stream = slot.streams.get(message[1])
                if stream is not None:
                    _call(stream, stream._deliver, message)
                continue
            if self._closed:
                return
            self._restart(slot)

    def _restart(self, slot: _Slot) -> None:
        """The process died: its streams fail (their turns are decoded whole), a new one starts."""
        with self._lock:
            slot.ready = False
            lost = list(slot.streams.values())
            slot.streams.clear()
            self.stats["failed"] += len(lost)
            self.stats["restarts"] += 1
        for stream in lost:
            _call(stream, stream.fail, "the closed-set stream process died")
        log.warning("closed-set stream process %d died with %d stream(s); restarting it", slot.index, len(lost))
        if slot.worker is not None:
            slot.worker.kill()
        while not self._closed:
            try:
                worker = WorkerProcess({}, slot.index, module=MODULE, label="closed-set stream")
                worker.wait_ready(START_TIMEOUT_SECONDS)
            except AsrError as exc:
                log.error("closed-set stream process %d could not restart: %s", slot.index, exc)
                time.sleep(RESTART_PAUSE_SECONDS)
                continue
            with self._lock:
                slot.worker, slot.ready = worker, True
            return

    def close(self) -> None:
        """Stop the processes; open streams fail and their turns are decoded whole."""
        self._closed = True
        with self._lock:
            slots, self._slots = self._slots, []
        for slot in slots:
            for stream in list(slot.streams.values()):
                _call(stream, stream.fail, "speech recognition is shutting down")
            slot.ready = False
            slot.outbox.put(None)
            if slot.worker is not None:
                slot.worker.stop()

    def worker_pids(self) -> list[int]:
        return [s.worker.pid for s in self._slots if s.worker is not None and s.worker.alive()]


class StreamedEngine:
    """The streams as the router's closed-set engine (``engines.RoutedEngine``): an utterance no
    stream was fed while it was spoken goes whole to a new stream, decoded at once there."""

    name = "pocketsphinx"

    def __init__(self, streams: ClosedStreams) -> None:
        self.streams = streams

    async def start(self) -> None:
        if not self.streams.started:
            await asyncio.to_thread(self.streams.start)

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Expect, *,
                        urgent: bool | Urgency = True) -> Transcript:
        if not expect.closed:
            raise AsrError(f"pocketsphinx here only decodes closed sets, not {expect.kind!r}")
        start = time.perf_counter()
        stream = self.streams.open(expect, sample_rate)
        if stream is None:
            raise AsrError("no closed-set stream process can take the utterance now")
        result = await stream.finish(whole=pcm)
        return dataclasses.replace(result, decode_seconds=time.perf_counter() - start)

    @property
    def backlog(self) -> int:
        return 0  # every stream has a decoder of its own: nothing waits behind another call's

    @property
    def saturated(self) -> bool:
        return False

    def waiting(self, request: asyncio.Task[Transcript]) -> bool:
        return False  # a stream of its own: never behind another call's

    @property
    def restarts(self) -> int:
        return int(self.streams.stats["restarts"])

    def worker_pids(self) -> list[int]:
        return self.streams.worker_pids()

    async def close(self) -> None:
        await asyncio.to_thread(self.streams.close)
