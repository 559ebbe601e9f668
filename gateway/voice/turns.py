"""Turn timing: where the time goes between the end of the caller's speech and the bot's answer.

One ``TurnTimer`` per caller turn records wall-clock marks (``time.perf_counter``) at each stage
and the endpoint wait in audio time. ``as_dict`` gives the split the benches print:

- ``endpoint_wait``: end of the caller's speech -> the endpointer's decision (the end-of-turn
  silence window; audio seconds);
- ``recognition``: decision -> transcript (0 when a speculative decode finished in the window);
- ``dialog``: the core answering the event;
- ``tts``: the core's answer -> first synthesized audio of the reply;
- ``total``: end of the caller's speech -> first reply frame pulled by the connector.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.core.actions import Expect


class TurnTimer:
    """Marks of one turn; every mark is optional (a turn may end without a reply)."""

    def __init__(self, expect: Expect, kind: str = ""):
        self.kind = kind or ("closed" if expect.closed else "open")
        self.expect_kind = expect.kind
        self.engine = ""
        self.text = ""
        self.speculative = False
        self.cut = False
        self.audio_seconds = 0.0
        self.endpoint_wait = 0.0
        self.speech_end = 0.0
        self._decided: float | None = None
        self._rec_start: float | None = None
        self._rec_done: float | None = None
        self._dialog_start: float | None = None
        self._dialog_done: float | None = None
        self._tts_first: float | None = None
        self._first_frame: float | None = None

    @property
    def first_audio_seen(self) -> bool:
        return self._tts_first is not None

    def endpoint(self, *, speech_end: float, decided: float, cut: bool = False, audio_seconds: float = 0.0) -> None:
        """The endpointer decided the turn is over at audio time ``decided``."""
        self._decided = time.perf_counter()
        self.speech_end = speech_end
        self.endpoint_wait = max(0.0, decided - speech_end)
        self.cut = cut
        self.audio_seconds = audio_seconds

    def decided_now(self) -> None:
        """A turn without an endpoint (DTMF): the decision is now."""
        self._decided = time.perf_counter()

    def recognition_started(self) -> None:
        self._rec_start = time.perf_counter()

    def recognition_done(self) -> None:
        self._rec_done = time.perf_counter()

    def dialog_started(self) -> None:
        if self._dialog_start is None:
            self._dialog_start = time.perf_counter()

    def dialog_done(self) -> None:
        self._dialog_done = time.perf_counter()

    def tts_first_audio(self) -> None:
        if self._tts_first is None:
            self._tts_first = time.perf_counter()

    def first_frame(self, audio_now: float = 0.0) -> None:
        if self._first_frame is None:
            self._first_frame = time.perf_counter()

    @staticmethod
    def _span(a: float | None, b: float | None) -> float | None:
        if a is None or b is None:
            return None
        return round(max(0.0, b - a), 4)

    def _ready(self, decided: float | None) -> float | None:
        """When the event could have gone to the core: decision and transcript both in hand."""
        marks = [m for m in (decided, self._rec_done) if m is not None]
        return max(marks) if marks else None

    def as_dict(self) -> dict[str, Any]:
        decided = self._decided
        rec_from = None
        if self._rec_start is not None and decided is not None:
            rec_from = max(self._rec_start, decided)
        total = None
        if decided is not None and self._first_frame is not None:
            total = round(self.endpoint_wait + self._first_frame - decided, 4)
        return {
            "kind": self.kind,
            "expect": self.expect_kind,
            "engine": self.engine,
            "text": self.text,
            "speculative": self.speculative,
            "cut": self.cut,
            "audio_seconds": round(self.audio_seconds, 3),
            "endpoint_wait": round(self.endpoint_wait, 4),
            "recognition": self._span(rec_from, self._rec_done),
            "recognition_cpu_wall": self._span(self._rec_start, self._rec_done),
            "queue": self._span(self._ready(decided), self._dialog_start),
            "dialog": self._span(self._dialog_start, self._dialog_done),
            "tts": self._span(self._dialog_done, self._tts_first),
            "total": total,
        }
