"""Closed-set recognition in its own process, so the gateway's event loop never holds the GIL for it.

pocketsphinx decodes with the GIL held: run in a thread of the gateway process, a 40 ms decode
stalls the event loop (and every call's 20 ms audio tick) for those 40 ms. ``ClosedSetProcess``
keeps one decoder in a worker process (``gateway.voice.asr.closed_worker``) and offers the same
blocking ``recognize`` as an in-process engine; the router calls it from a thread that only
waits on a socket. Requests are serialized (a closed-set decode takes a few tens of ms), each is
bounded by ``request_timeout``; a worker that dies is restarted and the request tried once more
on the fresh one, a worker that overruns is killed and restarted and the request fails. Every
failure is an ``AsrError``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from gateway.core.actions import Expect
from gateway.voice.asr.base import AsrError, Transcript
from gateway.voice.asr.pool import START_TIMEOUT_SECONDS, WorkerProcess

log = logging.getLogger(__name__)

MODULE = "gateway.voice.asr.closed_worker"


class ClosedSetProcess:
    """A closed-set engine (pocketsphinx or Vosk) in a worker process, with the ``Engine`` interface."""

    def __init__(self, name: str, *, model_dir: str = "", request_timeout: float = 30.0) -> None:
        self.name = name
        self.request_timeout = request_timeout
        self._config: dict[str, Any] = {"engine": name}
        if model_dir:
            self._config["model_dir"] = model_dir
        self._lock = threading.Lock()
        self._worker: WorkerProcess | None = None
        self._closed = False
        self.stats = {"requests": 0, "restarts": 0}
        self.waiting = 0  # requests in recognize() now: beyond one, they queue for the worker

    def start(self) -> None:
        """Start and warm the worker (blocking; ``AsrError`` if the engine cannot load)."""
        with self._lock:
            if self._worker is None:
                self._worker = self._spawn()

    def _spawn(self) -> WorkerProcess:
        worker = WorkerProcess(self._config, 0, module=MODULE, label=self.name)
        worker.wait_ready(START_TIMEOUT_SECONDS)
        return worker

    def _restart(self, reason: str) -> WorkerProcess:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
        if self._closed:
            raise AsrError(f"{self.name} is shutting down")
        log.warning("restarting the %s worker: %s", self.name, reason)
        self.stats["restarts"] += 1
        self._worker = self._spawn()
        return self._worker

    def recognize(self, pcm: bytes, sample_rate: int, expect: Expect) -> Transcript:
        """Decode one utterance in the worker (blocking; the caller's thread only waits on a socket)."""
        self.waiting += 1
        try:
            return self._recognize(pcm, sample_rate, expect)
        finally:
            self.waiting -= 1

    def _recognize(self, pcm: bytes, sample_rate: int, expect: Expect) -> Transcript:
        with self._lock:
            if self._closed:
                raise AsrError(f"{self.name} is shut down")
            for attempt in (1, 2):
                worker = self._worker
                if worker is None or not worker.alive():
                    worker = self._restart("worker was not running")
                try:
                    worker.conn.send((pcm, sample_rate, expect))
                    if not worker.conn.poll(self.request_timeout):
                        self._restart(f"no answer within {self.request_timeout:.0f} s")
                        raise AsrError(f"{self.name} overran {self.request_timeout:.0f} s and was restarted")
                    status, payload = worker.conn.recv()
                    break
                except (EOFError, OSError) as exc:
                    # Died mid-request: once more on a fresh worker; a second death fails the request.
                    self._restart(f"crashed ({type(exc).__name__})")
                    if attempt == 2:
                        raise AsrError(f"{self.name} worker crashed twice on this audio; it was restarted") from exc
            self.stats["requests"] += 1
        if status != "ok":
            raise AsrError(str(payload))
        return payload

    def close(self) -> None:
        """Stop the worker; later requests fail with ``AsrError``."""
        self._closed = True
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None

    def worker_pids(self) -> list[int]:
        """Process id of the live worker (for tests and diagnostics)."""
        worker = self._worker
        return [worker.pid] if worker is not None and worker.alive() else []
