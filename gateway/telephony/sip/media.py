"""A call's audio between pjmedia's conference bridge and the gateway: ``CallAudioPort``.

pjmedia calls ``onFrameReceived`` (the caller's audio) and ``onFrameRequested`` (what to send)
every 20 ms from its clock thread. The port never touches asyncio objects; it talks to
``FrameBuffers``, plain thread-safe queues shared with the event loop:

- received frames go to a ``FrameSink`` (one per endpoint) that wakes the loop at most once per
  batch (``call_soon_threadsafe``) instead of once per frame per call;
- frames to send are taken from a small deque the loop keeps topped up (``OUT_DEPTH`` frames) at
  each 20 ms tick of the call's media leg (``CallLeg.play``); an empty deque sends silence and
  counts an underrun (a gap the caller hears).

``frame.buf`` is a SWIG ``std::vector<unsigned char>``: iterating it from Python costs about
1 ms per 20 ms frame. ``read_frame``/``write_frame`` copy the vector's storage in one step
through its data pointer instead (a few microseconds), after checking once at import that this
reads the same bytes as the slow path; if the check fails they fall back to the slow path.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import threading
import time
from typing import Callable

import pjsua2 as pj

from gateway.telephony.sip.runtime import guarded

log = logging.getLogger(__name__)

OUT_DEPTH = 2
"""Frames of bot audio queued ahead of pjmedia's clock: 40 ms (each frame here is heard that much
later); a call whose loop falls behind grows its own queue (below)."""
OUT_DEPTH_MAX = 8
"""A call whose queue ran dry grows its queue (one frame per 5 frames of underrun) up to 160 ms:
a loaded machine trades a little latency for audio without gaps."""
MAX_OUT_FRAMES = 50
"""Upper bound of the outgoing queue (1 s); older frames are dropped beyond it."""
MAX_PENDING_IN = 5000
"""Received frames waiting for the loop across all calls (100 s of one call): a stalled loop
cannot make the media thread grow memory without bound."""


# ---- fast access to a MediaFrame's std::vector<unsigned char> ------------------------------------
def _vector_data(vec: pj.ByteVector) -> int:
    """Address of the vector's first element (libstdc++ keeps ``_M_start`` first)."""
    return ctypes.c_void_p.from_address(int(vec.this)).value or 0


def _fast_path_works() -> bool:
    probe = bytes(range(256)) * 2
    vec = pj.ByteVector(probe)
    try:
        if ctypes.string_at(_vector_data(vec), len(probe)) != probe:
            return False
        out = pj.ByteVector()
        out.resize(len(probe))
        ctypes.memmove(_vector_data(out), probe[::-1], len(probe))
        return bytes(out) == probe[::-1]
    except (ValueError, OSError, TypeError):
        return False


FAST_FRAMES = _fast_path_works()


def read_frame(frame: pj.MediaFrame) -> bytes:
    """The frame's bytes."""
    vec = frame.buf
    n = vec.size()
    if not n:
        return b""
    if FAST_FRAMES:
        return ctypes.string_at(_vector_data(vec), n)
    return bytes(vec)


def write_frame(frame: pj.MediaFrame, pcm: bytes) -> None:
    """Fill the frame with ``pcm`` (16-bit audio)."""
    if FAST_FRAMES:
        vec = frame.buf
        vec.resize(len(pcm))
        ctypes.memmove(_vector_data(vec), pcm, len(pcm))
    else:
        frame.buf = pj.ByteVector(pcm)
    frame.size = len(pcm)
    frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO


# ---- buffers shared with the loop --------------------------------------------------------------
class FrameBuffers:
    """One call's audio queues and counters; plain Python, safe to hold on the event loop."""

    def __init__(self, call_id: str, sample_rate: int) -> None:
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate // 50 * 2
        self.silence = bytes(self.frame_bytes)
        self.outgoing: collections.deque[bytes] = collections.deque(maxlen=MAX_OUT_FRAMES)
        self.active = True
        self.frames_in = 0
        self.frames_out = 0
        self.underruns = 0
        self.media_seconds = 0.0  # CPU time spent inside the port's callbacks
        self.started = time.monotonic()
        self.consumer: Callable[[bytes], None] | None = None  # the session's push_audio, on the loop

    def top_up(self, pull: Callable[[], bytes]) -> None:
        """Loop side: keep ``OUT_DEPTH`` frames (more after underruns) queued from the session."""
        depth = min(OUT_DEPTH_MAX, OUT_DEPTH + self.underruns // 5)
        while len(self.outgoing) < depth:
            self.outgoing.append(pull())

    def stats(self) -> dict[str, float]:
        """Counters for logs and benches; ``media_cpu`` is the share of one core per call."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "underruns": self.underruns,
            "media_seconds": round(self.media_seconds, 6),  # rounded: a long float could read as a card number to the log redactor
            "media_cpu": round(self.media_seconds / elapsed, 6),
        }


class FrameSink:
    """Carries received frames from the media thread to the loop in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: collections.deque[tuple[FrameBuffers, bytes]] = collections.deque()
        self._scheduled = False
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, buffers: FrameBuffers, pcm: bytes) -> None:
        """Media thread: queue one frame and wake the loop unless a wake-up is pending."""
        if len(self._pending) >= MAX_PENDING_IN:
            self.dropped += 1
            return
        self._pending.append((buffers, pcm))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the endpoint is going away
            pass

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        pending = self._pending
        while pending:
            buffers, pcm = pending.popleft()
            consumer = buffers.consumer
            if buffers.active and consumer is not None:
                try:
                    consumer(pcm)
                except Exception:  # noqa: BLE001 - one call's session error must not stop the others
                    log.exception("call %s: voice session rejected audio", buffers.call_id)
                    buffers.active = False


class CallAudioPort(pj.AudioMediaPort):
    """The conference-bridge port of one call: caller audio in, bot audio out."""

    def __init__(self, buffers: FrameBuffers, sink: FrameSink | None) -> None:
        super().__init__()
        self.buffers = buffers
        self.sink = sink

    def create(self) -> None:
        """Register the port with the conference bridge at the call's rate (runtime thread)."""
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.buffers.sample_rate, 1, 20000, 16, 0, 0)
        self.createPort(f"call-{self.buffers.call_id[:24]}", fmt)

    @guarded
    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        t0 = time.thread_time()
        b = self.__dict__.get("buffers")
        if b is None:
            return  # the port is being taken apart (endpoint shutdown)
        if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and b.active:
            pcm = read_frame(frame)
            if len(pcm) == b.frame_bytes:
                b.frames_in += 1
                if self.sink is not None:
                    self.sink.put(b, pcm)
        b.media_seconds += time.thread_time() - t0

    @guarded
    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        t0 = time.thread_time()
        b = self.__dict__.get("buffers")
        if b is None:
            return
        try:
            pcm = b.outgoing.popleft()
            b.frames_out += 1
        except IndexError:
            pcm = b.silence
            if b.active and b.frames_out:
                b.underruns += 1
        write_frame(frame, pcm)
        b.media_seconds += time.thread_time() - t0
