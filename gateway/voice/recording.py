"""Call recordings: both sides of a call, stored with its conversation, secrets left silent.

Off by default (``recordings.enabled``). When on, a call on a listed channel
(``recordings.channels``) is written as it happens to a two-channel FLAC file (left: the
caller, right: the gateway), ``<data_dir>/recordings/<conversation>/<call>.flac``, through a
``.part`` file renamed when the call ends. While the journey asks for something sensitive (a PIN,
a one-time code: the ``Expect.sensitive`` of the question) the caller's side is written as
silence, keys included, so a recording never holds what the event log masks. A call whose
conversation ended in no listed journey (``recordings.journeys``; empty = every journey) is
deleted when it ends. Retention (``retention.recordings_days``) and erasure reach the folder:
see :mod:`gateway.context.recordings`.

Sans-IO apart from the file: the session hands each 20 ms frame to :meth:`CallRecorder.caller`
and :meth:`CallRecorder.bot` and says when a question is sensitive. :class:`SessionRecording` is
the voice session's collaborator: it applies the settings, starts the recorder once the
conversation is open, sets ``sensitive`` from every question and decides at the end whether the
file stays. A recorder that fails (disk full, no permission) logs one line with the call id and
stops; the call goes on. The event loop only copies frames: the FLAC encoding and the disk
writes are done a second at a time by one writer thread per process (:func:`writer_thread`). On
a 60 s AudioSocket call that was about 55 ms of the loop's CPU and 20 ms of the writer's, where
writing every 20 ms frame on the loop cost 0.5-0.6 s (0.15 ms a write).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent import futures
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile

from gateway.context.recordings import recording_path

if TYPE_CHECKING:
    from gateway.config import RecordingSettings
    from gateway.core.port import ConversationPort

log = logging.getLogger(__name__)

MAX_RECORDING_SECONDS = 4 * 3600
"""A call longer than this stops being recorded (the file is kept as it is)."""
MAX_SKEW_FRAMES = 100
"""Frames (2 s) one side may run ahead of the other (a connector that stops sending the caller's
audio while it still pulls the bot's): past it the silent side is filled with silence, so the two
stay aligned to the call's clock and the queue cannot grow for the rest of the call."""
WRITE_BATCH_FRAMES = 50
"""Frame pairs (1 s) encoded and written at once. One FLAC write costs about 0.15 ms of CPU on a
live call whatever its size (cold caches, the library call), so per frame it would cost the event
loop some 0.5 s of CPU a minute per call; in batches, in the writer thread, the loop only copies."""
MAX_PENDING_WRITES = 30
"""Batches (30 s) a recording may have waiting for the writer thread: past it the disk is too
slow for the calls and this recording stops instead of holding their audio in memory."""

_writer: ThreadPoolExecutor | None = None


def writer_thread() -> ThreadPoolExecutor:
    """The one thread of this process that encodes and writes recordings (in order per file)."""
    global _writer
    if _writer is None:
        _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recordings")
    return _writer


class CallRecorder:
    """One call's recording (see the module docstring). With ``writer`` the batches are encoded
    and written there; without it, at once (tools, tests)."""

    def __init__(self, data_dir: Path, conversation_id: str, call_id: str, rate: int,
                 writer: Executor | None = None) -> None:
        self.rate = rate
        self.path = recording_path(data_dir, conversation_id, call_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._part = self.path.with_suffix(".flac.part")
        self._file = soundfile.SoundFile(str(self._part), mode="w", samplerate=rate, channels=2, format="FLAC",
                                         subtype="PCM_16")
        self.writer = writer
        self._writes: list[Future[Any]] = []
        self._caller: list[np.ndarray] = []
        self._bot: list[np.ndarray] = []
        self.max_frames = int(MAX_RECORDING_SECONDS * 50)
        self.sensitive = False
        self.frames = 0
        self.silenced_frames = 0
        self.closed = False

    def caller(self, frame: bytes) -> None:
        """A 20 ms frame of the caller (silence while the question is sensitive)."""
        if self.closed:
            return
        samples = np.frombuffer(frame, dtype="<i2")
        if self.sensitive:
            samples = np.zeros_like(samples)
            self.silenced_frames += 1
        self._caller.append(samples)
        if len(self._caller) - len(self._bot) > MAX_SKEW_FRAMES:
            self._bot.append(np.zeros_like(samples))
        self._flush()

    def bot(self, frame: bytes) -> None:
        """A 20 ms frame the gateway sent."""
        if not self.closed:
            samples = np.frombuffer(frame, dtype="<i2")
            self._bot.append(samples)
            if len(self._bot) - len(self._caller) > MAX_SKEW_FRAMES:
                self._caller.append(np.zeros_like(samples))
            self._flush()

    def _flush(self, *, final: bool = False) -> None:
        room = self.max_frames - self.frames
        n = min(len(self._caller), len(self._bot), room)
        if n <= 0 or (n < WRITE_BATCH_FRAMES and n < room and not final):
            return
        left, right = np.concatenate(self._caller[:n]), np.concatenate(self._bot[:n])
        del self._caller[:n], self._bot[:n]
        size = min(len(left), len(right))
        block = np.stack([left[:size], right[:size]], axis=1)
        self._check_writes()
        if self.writer is None or final:
            self._file.write(block)
        else:
            self._writes.append(self.writer.submit(self._file.write, block))
        self.frames += n
        if self.frames >= self.max_frames and not final:
            log.warning("recording %s reached %d s; the rest of the call is not recorded", self.path.name,
                        MAX_RECORDING_SECONDS)
            self.close(keep=True)

    def _check_writes(self) -> None:
        """Raise the error of a batch the writer thread failed to write (disk full, ...)."""
        for done in [f for f in self._writes if f.done()]:
            self._writes.remove(done)
            if done.exception() is not None:
                raise done.exception()  # type: ignore[misc]
        if len(self._writes) > MAX_PENDING_WRITES:
            raise OSError(f"the disk is too slow: {len(self._writes)} s of the recording wait to be written")

    @property
    def writing(self) -> Future[Any] | None:
        """The last batch handed to the writer thread (done: every earlier one is)."""
        return self._writes[-1] if self._writes else None

    @property
    def caller_ahead(self) -> int:
        """Caller frames waiting for the bot's (negative: bot frames waiting for the caller's)."""
        return len(self._caller) - len(self._bot)

    def close(self, *, keep: bool) -> Path | None:
        """End the recording: keep it (renamed into place) or delete it; the kept path. Waits for
        the writer thread (await :attr:`writing` first on an event loop)."""
        if self.closed:  # closed at the length limit: kept so far, deleted now if it must not stay
            if keep and self.path.exists():
                return self.path
            self.path.unlink(missing_ok=True)
        else:
            self.closed = True
            futures.wait(self._writes)
            failure: Exception | None = None
            try:
                if keep:  # the side that ran ahead (up to MAX_SKEW_FRAMES) is written against silence
                    short, long_ = sorted((self._caller, self._bot), key=len)
                    short += [np.zeros_like(f) for f in long_[len(short):]]
                    self._flush(final=True)
                    self._check_writes()
                self._file.close()
            except Exception as exc:  # noqa: BLE001 - a file the disk could not take whole is not kept
                failure = exc
            if keep and self.frames and failure is None:
                self._part.replace(self.path)
                return self.path
            self._part.unlink(missing_ok=True)
            if failure is not None and keep:
                self._remove_folder()
                raise failure
        self._remove_folder()
        return None

    def _remove_folder(self) -> None:
        try:
            self.path.parent.rmdir()  # only when empty
        except OSError:
            pass


class SessionRecording:
    """A voice session's recording: whether this call is recorded, the recorder, what is kept."""

    def __init__(self, settings: RecordingSettings, data_dir: Path, *, call_id: str, channel: str,
                 sample_rate: int) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.wanted = settings.enabled and channel in settings.channels
        self.recorder: CallRecorder | None = None
        self.kept: Path | None = None
        self._sensitive = False

    def open(self, conversation_id: str) -> None:
        """The conversation is open: start recording (once) when this call is recorded."""
        if not self.wanted or self.recorder is not None:
            return
        self.wanted = False  # one attempt: a failure does not retry per frame
        try:
            self.recorder = CallRecorder(self.data_dir, conversation_id, self.call_id, self.sample_rate,
                                         writer_thread())
        except Exception as exc:  # noqa: BLE001 - a recording must never cost the call
            log.error("call %s: not recorded: %s: %s", self.call_id, type(exc).__name__, exc)
            return
        self.recorder.sensitive = self._sensitive
        log.info("call %s: recording to %s", self.call_id, self.recorder.path)

    def question(self, sensitive: bool) -> None:
        """A question arrived: the caller's side is silence while a sensitive one is answered."""
        self._sensitive = sensitive
        if self.recorder is not None:
            self.recorder.sensitive = sensitive

    def caller(self, frame: bytes) -> None:
        if self.recorder is not None:
            self._guard(self.recorder.caller, frame)

    def bot(self, frame: bytes) -> None:
        if self.recorder is not None:
            self._guard(self.recorder.bot, frame)

    def _guard(self, write: Any, frame: bytes) -> None:
        try:
            write(frame)
        except Exception as exc:  # noqa: BLE001 - disk full, permission: stop recording, keep the call
            log.error("call %s: recording stopped: %s: %s", self.call_id, type(exc).__name__, exc)
            self._drop()

    def _drop(self) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            self._discard(recorder)

    @staticmethod
    def _discard(recorder: CallRecorder) -> None:
        """Delete the recording after the writes it has queued (in the writer thread, never waiting)."""
        def close() -> None:
            try:
                recorder.close(keep=False)
            except Exception:  # noqa: BLE001 - already reported once
                pass

        if recorder.writer is not None:
            recorder.writer.submit(close)
        else:
            close()

    async def close(self, core: ConversationPort, conversation_id: str, timeout: float) -> Path | None:
        """The call ended: keep the file when every journey is recorded or the conversation is
        in a listed one (asked of the core, bounded by ``timeout``), else delete it."""
        recorder = self.recorder
        if recorder is None:
            return None
        keep = True
        if self.settings.journeys:
            try:
                context = await asyncio.wait_for(core.context(conversation_id), timeout)
                journey = str(context.get("journey", ""))
            except Exception as exc:  # noqa: BLE001 - unknown journey: not kept (nothing listed matched)
                log.warning("call %s: journey not read for the recording: %s", self.call_id, exc)
                journey = ""
            keep = journey in self.settings.journeys
        self.recorder = None
        ahead = recorder.caller_ahead
        if recorder.writing is not None:  # the writer thread's last batch, without blocking the loop
            _done, late = await asyncio.wait({asyncio.wrap_future(recorder.writing)}, timeout=timeout)
            if late:
                log.error("call %s: recording dropped: the disk took more than %.0f s", self.call_id, timeout)
                self._discard(recorder)
                return None
        try:
            self.kept = recorder.close(keep=keep)
        except Exception as exc:  # noqa: BLE001 - the call is over either way
            log.error("call %s: recording not closed: %s: %s", self.call_id, type(exc).__name__, exc)
            return None
        log.info("call %s: recording %s (%.1f s, %.1f s of the caller silenced, caller %+d frames at the end)",
                 self.call_id, "kept" if self.kept else "deleted", recorder.frames * 0.02,
                 recorder.silenced_frames * 0.02, ahead)
        return self.kept
