"""The process's single pjsua2 endpoint, driven from one thread the gateway owns.

pjsua2 allows one ``Endpoint`` per process (a second one aborts the process) and expects every
API call to come from a thread pjlib knows. This module makes both rules structural:

- ``PjRuntime`` creates the endpoint on its own thread (``threadCnt = 0``: pjsip has no worker
  threads of its own) and polls ``libHandleEvents`` there. SIP callbacks (incoming calls, call
  state, registration) therefore arrive on that thread, and so does every job submitted with
  ``submit``/``call``: all pjsua2 API calls of the gateway run on it, one at a time.
- A module-level guard refuses a second runtime in the same process with ``SipError`` instead of
  letting pjsua abort it.
- pjsua2 objects (calls, ports, accounts) are dropped on the runtime thread, before
  ``libDestroy()``; ``retire`` parks an object there until the next poll so it is never freed
  from inside its own callback.

Media callbacks (``AudioMediaPort``) come from pjmedia's clock thread and RTP DTMF from the media
worker thread; they only touch thread-safe buffers (see ``media.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
import gc
import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, TypeVar

import pjsua2 as pj

log = logging.getLogger(__name__)
pjlog = logging.getLogger("gateway.telephony.sip.pjsip")

T = TypeVar("T")

POLL_MS = 10
"""How long one ``libHandleEvents`` waits; jobs wait at most this long before they run."""
START_TIMEOUT_S = 10.0
"""Creating the endpoint and its transports takes well under a second; this bounds a stuck start."""

CALLS_PER_PROCESS = 4
"""Simultaneous calls one pjsua2 endpoint holds with the ``pjsua2-python`` 2.15.1 wheel: it is
built with ``PJSUA_MAX_CALLS`` = 4 (a compile-time table size), so a fifth call fails with
``PJ_ETOOMANY`` (outbound) or gets 486 from pjsua (inbound) whatever ``UaConfig.maxCalls`` says.
``sip.workers`` runs that many endpoints in worker processes behind the SIP front (``pool.py``).
``tests/sip`` checks this figure, so a wheel built with a larger table shows up there."""

_GUARD = threading.Lock()
_active: str = ""


class SipError(RuntimeError):
    """A SIP endpoint operation failed (start, transport, call setup)."""


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a pjsua2 callback so a Python error is logged instead of crossing into C++."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - an exception must never unwind into pjsip
            log.exception("error in SIP callback %s", fn.__qualname__)
            return None

    return wrapper


def _quietly(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with the C library's stdout sent to /dev/null.

    ``libCreate`` prints pjlib's start-up lines with printf before any log writer can be set;
    they would end up in the middle of a command's output (``voicegw call --json``)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        return fn()
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


class _LogWriter(pj.LogWriter):
    """Routes pjsip's log lines into Python logging."""

    LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}

    @guarded
    def write(self, entry: pj.LogEntry) -> None:
        pjlog.log(self.LEVELS.get(entry.level, logging.DEBUG), "%s", entry.msg.rstrip())


class PjRuntime:
    """Owns the process's pjsua2 ``Endpoint`` and the thread that drives it.

    ``configure(cfg)`` adjusts the ``EpConfig`` before ``libInit``; ``setup(ep)`` creates
    transports and accounts after ``libStart``; ``teardown(ep)`` runs on the same thread before
    ``libDestroy`` and must drop every pjsua2 object it holds (it may call ``pump``).
    """

    def __init__(
        self,
        name: str,
        *,
        configure: Callable[[pj.EpConfig], None] | None = None,
        setup: Callable[[pj.Endpoint], None] | None = None,
        teardown: Callable[[pj.Endpoint], None] | None = None,
        log_level: int = 2,
    ) -> None:
        self.name = name
        self._configure = configure
        self._setup = setup
        self._teardown = teardown
        self._log_level = log_level
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._retired: list[Any] = []
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._writer: _LogWriter | None = None
        self.ep: pj.Endpoint | None = None

    # ---- lifecycle (any thread) ------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Create the endpoint on the runtime thread; raises ``SipError`` if it cannot."""
        global _active
        with _GUARD:
            if _active:
                raise SipError(
                    f"a SIP endpoint ({_active}) is already running in this process; "
                    "pjsua2 allows one per process"
                )
            _active = self.name
        self._thread = threading.Thread(target=self._run, name=f"pjsip-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self._stopping.set()
            raise SipError(f"SIP endpoint {self.name} did not start within {timeout:.0f} s")
        if self._error is not None:
            raise SipError(f"SIP endpoint {self.name} failed to start: {self._error}") from self._error

    def stop(self, timeout: float = 10.0) -> None:
        """Run the teardown, destroy the endpoint and join the thread (idempotent)."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("SIP endpoint %s did not stop within %.0f s", self.name, timeout)

    @property
    def running(self) -> bool:
        return self._ready.is_set() and self._error is None and not self._stopping.is_set()

    @property
    def on_thread(self) -> bool:
        """True when called from the runtime thread."""
        return threading.current_thread() is self._thread

    # ---- jobs --------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run ``fn(*args)`` on the runtime thread; the future holds its result or error."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._stopping.is_set():
            fut.set_exception(SipError(f"SIP endpoint {self.name} is stopping"))
            return fut
        self._jobs.put((functools.partial(fn, *args), fut))
        return fut

    async def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Await ``fn(*args)`` run on the runtime thread (bounded by ``timeout``)."""
        return await asyncio.wait_for(asyncio.wrap_future(self.submit(fn, *args)), timeout)

    def retire(self, obj: Any) -> None:
        """Keep ``obj`` alive until the next poll, then drop it on the runtime thread."""
        self._retired.append(obj)

    def pump(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Handle events on the runtime thread for up to ``seconds`` (or until ``until()``)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return
            assert self.ep is not None
            self.ep.libHandleEvents(POLL_MS)

    # ---- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        ep = pj.Endpoint()
        try:
            _quietly(ep.libCreate)
            self.ep = ep
            cfg = pj.EpConfig()
            cfg.uaConfig.threadCnt = 0
            cfg.uaConfig.mainThreadOnly = False
            cfg.uaConfig.userAgent = "voicegw"
            self._writer = _LogWriter()
            cfg.logConfig.writer = self._writer
            cfg.logConfig.level = self._log_level
            cfg.logConfig.consoleLevel = self._log_level
            cfg.logConfig.decor = pj.PJ_LOG_HAS_SENDER
            med = cfg.medConfig
            med.clockRate = 16000
            med.sndClockRate = 16000
            med.audioFramePtime = 20
            med.ptime = 20
            med.noVad = True  # never suppress the bot's silence: the peer's jitter buffer wants frames
            med.ecTailLen = 0  # no echo canceller: there is no loudspeaker
            if self._configure is not None:
                self._configure(cfg)
            ep.libInit(cfg)
            if self._setup is not None:
                self._setup(ep)
            ep.libStart()
            ep.audDevManager().setNullDev()
        except Exception as exc:  # noqa: BLE001 - pj.Error and setup errors end the start
            self._error = SipError(exc.info() if isinstance(exc, pj.Error) else str(exc))
            log.error("SIP endpoint %s failed to start: %s", self.name, self._error)
            self._destroy(ep)
            self._ready.set()
            return
        self._ready.set()
        log.info("SIP endpoint %s running", self.name)
        try:
            while not self._stopping.is_set():
                ep.libHandleEvents(POLL_MS)
                self._run_jobs()
                if self._retired:
                    self._retired.clear()
        finally:
            self._drain_jobs()
            try:
                if self._teardown is not None:
                    self._teardown(ep)
            except Exception:  # noqa: BLE001 - teardown must still destroy the library
                log.exception("SIP endpoint %s teardown failed", self.name)
            self._retired.clear()
            self._destroy(ep)

    def _run_jobs(self) -> None:
        while True:
            try:
                job, fut = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(job())
            except pj.Error as exc:
                fut.set_exception(SipError(exc.info()))
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting side
                fut.set_exception(exc)

    def _drain_jobs(self) -> None:
        while True:
            try:
                _, fut = self._jobs.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(SipError(f"SIP endpoint {self.name} stopped"))

    def _destroy(self, ep: pj.Endpoint) -> None:
        global _active
        gc.collect()  # free unreachable pjsua2 objects here, on a pjlib thread, before destroy
        try:
            ep.libDestroy()
        except pj.Error as exc:
            log.warning("SIP endpoint %s destroy: %s", self.name, exc.info())
        self.ep = None
        with _GUARD:
            _active = ""
        log.info("SIP endpoint %s stopped", self.name)
