"""Closed-set recognition in worker processes, so the gateway's event loop never holds the GIL for it.

pocketsphinx decodes with the GIL held: run in a thread of the gateway process, a 40 ms decode
stalls the event loop (and every call's 20 ms audio tick) for those 40 ms. ``ClosedSetProcess``
keeps a pool of worker processes (``gateway.voice.asr.closed_worker``), each with its own
decoder, and offers the same blocking ``recognize`` as an in-process engine; the router calls it
from threads that only wait on a socket or for a worker to come free.

A request goes to an idle worker; when none is idle it waits for the first to come free, first
come first served, at most ``request_timeout``. So two calls' digits decode side by side instead
of one behind the other. Each decode is bounded by ``request_timeout``; a worker that dies is
restarted alone (the others go on decoding) and the request tried once more on the fresh one, a
worker that overruns is killed and restarted and the request fails. Every failure is an
``AsrError``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from gateway.core.actions import Expect
from gateway.voice.asr.base import AsrError, Transcript
from gateway.voice.asr.pool import START_TIMEOUT_SECONDS, WorkerProcess, start_workers
from gateway.voice.cores import usable_cores

log = logging.getLogger(__name__)

MODULE = "gateway.voice.asr.closed_worker"
MAX_CLOSED_WORKERS = 16
"""Closed-set workers are capped here (each holds its own decoder, ~40 MB RSS for pocketsphinx;
more than the cores only lengthens every decode)."""


def closed_workers_for(configured: int) -> int:
    """The pool size for ``voice.asr.closed_workers``: 0 means one per core, at least 1."""
    return max(1, min(configured or usable_cores(), MAX_CLOSED_WORKERS))


class ClosedSetProcess:
    """A closed-set engine (pocketsphinx or Vosk) in ``workers`` worker processes, with the ``Engine`` interface."""

    def __init__(self, name: str, *, model_dir: str = "", request_timeout: float = 30.0, workers: int = 1) -> None:
        self.name = name
        self.request_timeout = request_timeout
        self.size = max(1, min(workers, MAX_CLOSED_WORKERS))
        self._config: dict[str, Any] = {"engine": name}
        if model_dir:
            self._config["model_dir"] = model_dir
        self._cond = threading.Condition()
        self._workers: list[WorkerProcess | None] = []
        self._idle: list[int] = []  # slots free for a request (a busy or restarting slot is not here)
        self._queue: deque[object] = deque()  # requests waiting for a worker, first come first served
        self._started = False
        self._closed = False
        self.stats = {"requests": 0, "restarts": 0}

    @property
    def busy(self) -> int:
        """Workers decoding (or being restarted for) a request now."""
        return len(self._workers) - len(self._idle) if self._started else 0

    def start(self) -> None:
        """Start and warm every worker, side by side (blocking; ``AsrError`` if the engine cannot load)."""
        with self._cond:
            if self._started:
                return
            self._workers = list(start_workers(self._config, self.size, module=MODULE, label=self.name))
            self._idle = list(range(self.size))
            self._started = True
            log.info("%s ready: %d worker process(es)", self.name, self.size)

    def _spawn(self, index: int) -> WorkerProcess:
        worker = WorkerProcess(self._config, index, module=MODULE, label=self.name)
        worker.wait_ready(START_TIMEOUT_SECONDS)
        return worker

    def _restart(self, index: int, reason: str) -> WorkerProcess:
        """Replace worker ``index`` (held by the caller; the other workers go on)."""
        old = self._workers[index]
        if old is not None:
            old.kill()
            self._workers[index] = None
        if self._closed:
            raise AsrError(f"{self.name} is shutting down")
        log.warning("restarting %s worker %d: %s", self.name, index, reason)
        self.stats["restarts"] += 1
        worker = self._spawn(index)
        self._workers[index] = worker
        return worker

    def recognize(self, pcm: bytes, sample_rate: int, expect: Expect) -> Transcript:
        """Decode one utterance in an idle worker (blocking; the caller's thread only waits)."""
        index = self._acquire()
        try:
            status, payload = self._exchange(index, (pcm, sample_rate, expect))
        finally:
            self._release(index)
        if status != "ok":
            raise AsrError(str(payload))
        return payload

    def _acquire(self) -> int:
        """An idle worker's slot: the first free one, in the order requests came (bounded wait)."""
        ticket = object()
        deadline = time.monotonic() + self.request_timeout
        with self._cond:
            self._queue.append(ticket)
            try:
                while True:
                    if self._closed or not self._started:
                        raise AsrError(f"{self.name} is {'shut down' if self._closed else 'not started'}")
                    if self._idle and self._queue[0] is ticket:
                        return self._idle.pop(0)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AsrError(f"no {self.name} worker came free within {self.request_timeout:.0f} s")
                    self._cond.wait(left)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next in line may take another idle worker

    def _release(self, index: int) -> None:
        with self._cond:
            self._idle.append(index)
            self._cond.notify_all()

    def _exchange(self, index: int, message: tuple[bytes, int, Expect]) -> tuple[str, Any]:
        """Send one request to worker ``index`` (held by this thread) and wait for its answer."""
        for attempt in (1, 2):
            worker = self._workers[index]
            if worker is None or not worker.alive():
                worker = self._restart(index, "worker was not running")
            try:
                worker.conn.send(message)
                if not worker.conn.poll(self.request_timeout):
                    self._restart(index, f"no answer within {self.request_timeout:.0f} s")
                    raise AsrError(f"{self.name} overran {self.request_timeout:.0f} s and was restarted")
                reply: tuple[str, Any] = worker.conn.recv()
                break
            except (EOFError, OSError) as exc:
                # Died mid-request: once more on a fresh worker; a second death fails the request.
                self._restart(index, f"crashed ({type(exc).__name__})")
                if attempt == 2:
                    raise AsrError(f"{self.name} worker crashed twice on this audio; it was restarted") from exc
        with self._cond:
            self.stats["requests"] += 1
        return reply

    def close(self, wait: float = 10.0) -> None:
        """Stop the workers (a decode under way gets ``wait`` seconds to finish); later requests fail
        with ``AsrError``."""
        deadline = time.monotonic() + wait
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self.busy and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            workers, self._workers, self._idle = self._workers, [], []
            self._started = False
        for worker in workers:
            if worker is not None:
                worker.stop()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers, in slot order (for tests and diagnostics)."""
        return [w.pid for w in list(self._workers) if w is not None and w.alive()]
