"""Whisper worker processes: one model per process, requests batched, crashes contained.

The gateway's event loop never decodes. ``WhisperPool.submit`` queues an utterance and returns a
``concurrent.futures.Future``; one feeder thread per worker process takes its share of what is
waiting (urgent ones first: half of the utterances sharing an encoder window, a prompt hint
and their urgency, rounded up, at most ``max_batch``), sends it over a pipe, and waits for the
answer with a deadline. Nothing waits to fill a batch: a batch forms only from utterances that
would otherwise queue behind a busy worker, and on this CPU a batch of 2-4 costs 15-25 % less
CPU than the same utterances one by one (bench/asr.py). Every utterance of a batch waits for
the whole batch (one thread decodes four 2 s answers in 1.5 s, two in 0.75 s), which is why a
worker coming free does not take the whole queue but leaves the rest to the next worker to come
free. A worker that dies or overruns the deadline is killed and replaced; the utterances it held
fail with ``AsrError`` and every other call goes on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import PACKAGE_ROOT
from gateway.voice.asr.base import ENGINE_RATE, WORKER_ENV, AsrError, Urgency
from gateway.voice.asr.whisper import WhisperResult, check_model_dir, window_for
from gateway.voice.cores import usable_cores

log = logging.getLogger(__name__)

MAX_WORKERS = 2
"""Worker processes are capped here (one model of ~150 MB RSS each; 2 cores on the target host)."""
START_TIMEOUT_SECONDS = 120.0
"""Loading and warming one model; generous for a loaded CI machine."""


@dataclass
class _Request:
    samples: np.ndarray
    window: float
    urgency: Urgency = field(default_factory=Urgency)
    hint: str = ""  # whisper.HINTS key: a batch shares its window, its hint and its urgency
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


def start_workers(config: dict[str, Any], size: int, **kwargs: str) -> list["WorkerProcess"]:
    """Start ``size`` workers side by side and wait until every one is ready; if any cannot
    start, every one is killed and the ``AsrError`` raised (``kwargs``: ``module``, ``label``)."""
    workers = [WorkerProcess(config, i, **kwargs) for i in range(size)]
    try:
        for worker in workers:
            worker.wait_ready(START_TIMEOUT_SECONDS)
    except AsrError:
        for worker in workers:
            worker.kill()
        raise
    return workers


class WorkerProcess:
    """One recognizer worker process (``python -m MODULE FD CONFIG_JSON``) and the socket to it.

    Started as a plain subprocess rather than through ``multiprocessing`` so that embedding the
    gateway in any script works (spawn would re-import the caller's ``__main__``). The worker
    answers ``("ready", pid)`` once loaded, or ``("failed", message)``.
    """

    def __init__(
        self, config: dict[str, Any], index: int, *, module: str = "gateway.voice.asr.worker", label: str = "Whisper"
    ) -> None:
        self.index = index
        self.label = label
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        env.update(WORKER_ENV)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, str(child.fileno()), json.dumps(config)],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            parent.close()
            raise AsrError(f"cannot start a {label} worker process: {exc}") from exc
        finally:
            child.close()
        self.conn = Connection(parent.detach())

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            self.kill()
            raise AsrError(f"{self.label} worker {self.index} did not start within {timeout:.0f} s")
        try:
            status, detail = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise AsrError(f"{self.label} worker {self.index} died while loading the model") from exc
        if status != "ready":
            self.kill()
            raise AsrError(str(detail))

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("%s worker %d (pid %d) did not exit after kill", self.label, self.index, self.pid)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.conn.close()


class WhisperPool:
    """Whisper decoding in worker processes, with batching and crash recovery."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        workers: int = 0,
        window_seconds: float = 10.0,
        beam_size: int = 1,
        language: str = "en",
        max_batch: int = 4,
        decode_timeout: float = 60.0,
    ) -> None:
        self.model_dir = Path(model_dir)
        cores = usable_cores()
        self.size = max(1, min(workers or cores, MAX_WORKERS))
        threads = max(1, cores // self.size)
        self.window_seconds = window_seconds
        self.max_batch = max(1, max_batch)
        self.decode_timeout = decode_timeout
        self._config = {
            "model_dir": str(self.model_dir),
            "threads": threads,
            "window_seconds": window_seconds,
            "beam_size": beam_size,
            "language": language,
        }
        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._workers: list[WorkerProcess | None] = []
        self._closed = False
        self.stats = {"batches": 0, "utterances": 0, "restarts": 0, "max_batch_seen": 0}
        self.decoding = 0  # batches sent to a worker and not yet answered

    @property
    def started(self) -> bool:
        """True once the workers are up."""
        return bool(self._threads)

    def start(self) -> None:
        """Start and warm every worker (blocking; raises ``AsrError`` if the model cannot load)."""
        check_model_dir(self.model_dir)
        if self._threads:
            return
        self._workers = list(start_workers(self._config, self.size))
        for i in range(self.size):
            thread = threading.Thread(target=self._feed, args=(i,), name=f"asr-feed-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("whisper pool ready: %d workers x %d threads, window %.0f s",
                 self.size, self._config["threads"], self.window_seconds)

    def close(self) -> None:
        """Stop the workers; queued requests fail with ``AsrError``."""
        with self._cond:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for req in pending:
            if req.future.set_running_or_notify_cancel():
                req.future.set_exception(AsrError("recognizer is shutting down"))
        for thread in self._threads:
            thread.join(timeout=self.decode_timeout + 10)
        for worker in self._workers:
            if worker is not None:
                worker.stop()
        self._threads.clear()
        self._workers.clear()

    @property
    def saturated(self) -> bool:
        """Every worker is decoding and utterances wait for one. (An utterance is also pending for
        the moment between its ``submit`` and an idle worker's thread taking it: that is not busy.)"""
        with self._cond:
            return self.decoding >= self.size and any(not r.future.cancelled() for r in self._pending)

    def submit(self, pcm16k: bytes, *, urgent: bool | Urgency = True, hint: str = "") -> Future:
        """Queue one utterance (16 kHz 16-bit PCM); the future resolves to ``(WhisperResult, queue_s)``.

        An urgent request (an ended turn a caller waits for) is served before every speculative
        one (not urgent: a decode in a pause that may be thrown away) still waiting, and never
        batched with one. ``urgent`` may be an ``Urgency`` the caller hastens later: the request
        then counts as urgent from the time it was queued."""
        if not self._threads or self._closed:
            raise AsrError("Whisper pool is not running (start() it first)")
        samples = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / 32768.0
        urgency = urgent if isinstance(urgent, Urgency) else Urgency(urgent)
        req = _Request(samples, window_for(len(samples) / ENGINE_RATE, self.window_seconds), urgency, hint)
        with self._cond:
            self._pending.append(req)
            self._cond.notify()
        return req.future

    def _take_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            # Urgent requests first, each kind in the order they came: a speculative request
            # hastened when its turn ended stands among the urgent ones by when it was made.
            live = [r for r in self._pending if not r.future.cancelled()]
            self._pending.clear()
            if not live:
                return []
            lead = min(live, key=lambda r: not r.urgency.urgent)
            kind = (lead.window, lead.hint, lead.urgency.urgent)  # a caller's turn never waits on a guess
            same = [r for r in live if (r.window, r.hint, r.urgency.urgent) == kind]
            share = min(self.max_batch, -(-len(same) // 2) if self.size > 1 else len(same))  # half, rounded up
            batch = [r for r in same[:share] if r.future.set_running_or_notify_cancel()]
            taken = {id(r) for r in same[:share]}
            self._pending.extend(r for r in live if id(r) not in taken)
            if self._pending:
                self._cond.notify()  # what is left is another worker's share
            return batch

    def _feed(self, index: int) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            self._run(index, batch)

    def _run(self, index: int, batch: list[_Request]) -> None:
        started = time.perf_counter()
        message = (batch[0].window, [r.samples for r in batch], batch[0].hint)
        for attempt in (1, 2):
            try:
                status, payload = self._exchange_counted(index, message)
                break
            except (EOFError, OSError) as exc:
                # The worker died (killed, out of memory, or a signal before it was reaped): the
                # batch goes once to a fresh worker; a second death fails it (a poison input).
                self._safe_restart(index, "crashed")
                if attempt == 2:
                    self._fail(batch, AsrError(f"Whisper worker {index} crashed twice on this audio "
                                               f"({type(exc).__name__}); it was restarted"))
                    return
                log.warning("whisper worker %d crashed (%s); retrying %d utterance(s) once",
                            index, type(exc).__name__, len(batch))
            except AsrError as exc:
                self._fail(batch, exc)
                return
        if status != "ok":
            self._fail(batch, AsrError(f"Whisper decoding failed: {payload}"))
            return
        self.stats["batches"] += 1
        self.stats["utterances"] += len(batch)
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
        results: list[WhisperResult] = payload
        for req, result in zip(batch, results):
            req.future.set_result((result, started - req.queued_at))

    def _exchange_counted(self, index: int, message: tuple[float, list[np.ndarray], str]) -> tuple[str, Any]:
        with self._cond:
            self.decoding += 1
        try:
            return self._exchange(index, message)
        finally:
            with self._cond:
                self.decoding -= 1

    def _exchange(self, index: int, message: tuple[float, list[np.ndarray], str]) -> tuple[str, Any]:
        """Send one batch to worker ``index`` and wait for its answer (bounded)."""
        worker = self._workers[index]
        if worker is None or not worker.alive():
            worker = self._restart(index, "worker was not running")
        worker.conn.send(message)
        if not worker.conn.poll(self.decode_timeout):
            self._restart(index, f"no answer within {self.decode_timeout:.0f} s")
            raise AsrError(f"Whisper worker {index} overran {self.decode_timeout:.0f} s and was restarted")
        status, payload = worker.conn.recv()
        return status, payload

    @staticmethod
    def _fail(batch: list[_Request], exc: AsrError) -> None:
        for req in batch:
            if not req.future.done():
                req.future.set_exception(exc)

    def _safe_restart(self, index: int, reason: str) -> None:
        if self._closed:
            return
        try:
            self._restart(index, reason)
        except AsrError as exc:
            log.error("whisper worker %d could not be restarted: %s", index, exc)

    def _restart(self, index: int, reason: str) -> WorkerProcess:
        old = self._workers[index]
        if old is not None:
            old.kill()
        self._workers[index] = None
        if self._closed:
            raise AsrError("recognizer is shutting down")
        log.warning("restarting whisper worker %d: %s", index, reason)
        self.stats["restarts"] += 1
        worker = WorkerProcess(self._config, index)
        worker.wait_ready(START_TIMEOUT_SECONDS)
        self._workers[index] = worker
        return worker

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [w.pid for w in self._workers if w is not None]

