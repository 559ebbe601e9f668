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
and :meth:`CallRecorder.bot` and says when a question is sensitive.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile

from gateway.context.recordings import recording_path

log = logging.getLogger(__name__)

MAX_RECORDING_SECONDS = 4 * 3600
"""A call longer than this stops being recorded (the file is kept as it is)."""


class CallRecorder:
    """One call's recording (see the module docstring)."""

    def __init__(self, data_dir: Path, conversation_id: str, call_id: str, rate: int) -> None:
        self.rate = rate
        self.path = recording_path(data_dir, conversation_id, call_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._part = self.path.with_suffix(".flac.part")
        self._file = soundfile.SoundFile(str(self._part), mode="w", samplerate=rate, channels=2, format="FLAC",
                                         subtype="PCM_16")
        self._caller: list[np.ndarray] = []
        self._bot: list[np.ndarray] = []
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
        self._flush()

    def bot(self, frame: bytes) -> None:
        """A 20 ms frame the gateway sent."""
        if not self.closed:
            self._bot.append(np.frombuffer(frame, dtype="<i2"))
            self._flush()

    def _flush(self) -> None:
        n = min(len(self._caller), len(self._bot))
        if n == 0:
            return
        left, right = np.concatenate(self._caller[:n]), np.concatenate(self._bot[:n])
        del self._caller[:n], self._bot[:n]
        size = min(len(left), len(right))
        self._file.write(np.stack([left[:size], right[:size]], axis=1))
        self.frames += n
        if self.frames * 0.02 >= MAX_RECORDING_SECONDS:
            log.warning("recording %s reached %d s; the rest of the call is not recorded", self.path.name,
                        MAX_RECORDING_SECONDS)
            self.close(keep=True)

    def close(self, *, keep: bool) -> Path | None:
        """End the recording: keep it (renamed into place) or delete it; the kept path."""
        if self.closed:
            return self.path if keep and self.path.exists() else None
        self.closed = True
        self._file.close()
        if keep and self.frames:
            self._part.replace(self.path)
            return self.path
        self._part.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # only when empty
        except OSError:
            pass
        return None
