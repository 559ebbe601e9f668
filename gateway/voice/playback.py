"""Playback: the bot's outgoing audio, queued per prompt and paced by the connector's ticks.

A prompt (one ``Say`` or ``Ask``) is appended chunk by chunk while it is synthesized, so the
first clause or sentence plays while the next is still being made. The connector calls ``pull_frame()``
once per 20 ms tick; that call is the only clock, so the queue plays exactly in real time and
barge-in can cut it anywhere. ``clear()`` drops everything queued at once; ``pause()`` holds
playback on a tentative barge-in and ``resume()`` continues where it stopped.

A prompt is *finished* when its synthesis is closed and its last frame has been pulled (or it
was cut); the session starts its no-input timer from that moment.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from gateway.voice.endpoint import frame_rms

MAX_QUEUED_SECONDS = 120.0
"""Most audio one call may have queued; a longer reply is truncated (logged by the session)."""


@dataclass
class Prompt:
    """One utterance of the bot, filled by synthesis and drained by ``pull_frame``."""

    text: str
    barge_in: bool = True
    prompt_id: str = ""
    question: bool = False  # an ``Ask``: whatever the caller says over it is an answer
    held_for_caller: bool = False  # an answer that came while the caller spoke on: paused until they stop
    closed: bool = False
    cut: bool = False
    finished: bool = False
    frames_played: int = 0
    first_frame_tick: int | None = None
    finished_tick: int | None = None
    on_first_frame: Callable[["Prompt"], None] | None = None
    on_finished: Callable[["Prompt"], None] | None = None
    _frames: deque[bytes] = field(default_factory=deque)
    _partial: bytes = b""


class Playback:
    """Queue of prompts; ``pull_frame`` yields exactly one frame per call."""

    def __init__(self, frame_bytes: int, max_queued_seconds: float = MAX_QUEUED_SECONDS):
        self.frame_bytes = frame_bytes
        self._silence = bytes(frame_bytes)
        self._prompts: deque[Prompt] = deque()
        self._queued_frames = 0
        self._max_frames = int(max_queued_seconds * 50)
        self.paused = False
        self.ticks = 0
        self.last_level: float | None = None
        self.truncated = 0

    # -- filling -------------------------------------------------------------------------
    def start_prompt(self, text: str, *, barge_in: bool = True, prompt_id: str = "", question: bool = False) -> Prompt:
        """Open a prompt at the end of the queue; audio is added with ``append``."""
        prompt = Prompt(text=text, barge_in=barge_in, prompt_id=prompt_id, question=question)
        self._prompts.append(prompt)
        return prompt

    def append(self, prompt: Prompt, pcm: bytes) -> bool:
        """Queue PCM for ``prompt``; False when it was cut or the queue is full."""
        if prompt.cut or prompt.finished or prompt.closed:
            return False
        data = prompt._partial + pcm
        whole = len(data) - len(data) % self.frame_bytes
        prompt._partial = data[whole:]
        for i in range(0, whole, self.frame_bytes):
            if self._queued_frames >= self._max_frames:
                self.truncated += 1
                return False
            prompt._frames.append(data[i : i + self.frame_bytes])
            self._queued_frames += 1
        return True

    def close_prompt(self, prompt: Prompt) -> None:
        """Synthesis of ``prompt`` is complete (a trailing partial frame is padded)."""
        if prompt.closed:
            return
        if prompt._partial and not prompt.cut:
            prompt._frames.append(prompt._partial + bytes(self.frame_bytes - len(prompt._partial)))
            self._queued_frames += 1
        prompt._partial = b""
        prompt.closed = True
        self._settle()

    # -- control -------------------------------------------------------------------------
    def clear(self) -> int:
        """Barge-in: drop every queued prompt at once; returns the frames dropped."""
        dropped = self._queued_frames
        prompts = list(self._prompts)
        self._prompts.clear()
        self._queued_frames = 0
        self.paused = False
        for prompt in prompts:
            prompt._frames.clear()
            prompt.cut = True
            self._finish(prompt)
        return dropped

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    # -- state ---------------------------------------------------------------------------
    @property
    def active(self) -> Prompt | None:
        """The prompt being played (or awaiting synthesis), if any."""
        return self._prompts[0] if self._prompts else None

    @property
    def talking(self) -> bool:
        """A prompt is playing or about to (synthesis still running)."""
        return bool(self._prompts)

    @property
    def barge_in_allowed(self) -> bool:
        prompt = self.active
        return prompt.barge_in if prompt is not None else True

    @property
    def queued_seconds(self) -> float:
        return self._queued_frames * 0.02

    @property
    def has_audio(self) -> bool:
        return self._queued_frames > 0

    # -- draining ------------------------------------------------------------------------
    def pull_frame(self) -> bytes:
        """The next 20 ms to send: prompt audio, or silence (never blocks)."""
        self.ticks += 1
        self._settle()
        if self.paused or not self._prompts:
            self.last_level = 0.0 if self._prompts else None
            return self._silence
        prompt = self._prompts[0]
        if not prompt._frames:
            self.last_level = 0.0  # synthesis has not caught up: a gap inside the prompt
            return self._silence
        frame = prompt._frames.popleft()
        self._queued_frames -= 1
        prompt.frames_played += 1
        if prompt.first_frame_tick is None:
            prompt.first_frame_tick = self.ticks
            if prompt.on_first_frame is not None:
                prompt.on_first_frame(prompt)
        self.last_level = frame_rms(frame)
        if prompt.closed and not prompt._frames:
            self._prompts.popleft()
            self._finish(prompt)
        return frame

    def _settle(self) -> None:
        while self._prompts and self._prompts[0].closed and not self._prompts[0]._frames:
            self._finish(self._prompts.popleft())

    def _finish(self, prompt: Prompt) -> None:
        if prompt.finished:
            return
        prompt.finished = True
        prompt.finished_tick = self.ticks
        if prompt.on_finished is not None:
            prompt.on_finished(prompt)
