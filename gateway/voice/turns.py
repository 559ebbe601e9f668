"""Turn timing: where the time goes between the end of the caller's speech and the bot's answer.

One ``TurnTimer`` per caller turn records wall-clock marks (``time.perf_counter``) at each stage
and the endpoint wait in audio time. ``stages`` gives the split that ``/metrics`` (histogram
``voicegw_turn_stage_seconds``), the conversation's event log (``TurnTiming``), the benches and
``voicegw simulate`` all print, every stage in seconds:

- ``endpoint``: the caller's last voiced frame -> the end-of-turn decision (audio seconds: the
  silence window the endpointer waited, shorter when the answer was already complete);
- ``asr_queue``: how long the turn's recognition waited for a recognizer (a busy Whisper worker,
  the closed-set decoder serving another call), wherever that wait fell;
- ``asr_decode``: the recognizer's own decoding time;
- ``recognition``: decision -> transcript in hand (0 when a speculative decode was ready in time);
- ``queue``: transcript in hand -> the event handed to the core (the call's previous work);
- ``dialog``: the core answering the event;
- ``tts``: the core's answer -> first synthesized audio of the reply;
- ``send``: first synthesized audio -> first reply frame taken by the connector (the connector's
  own jitter/packet buffers come after it; ``bench/sip_calls.py`` measures the wire);
- ``total``: the caller's last voiced frame -> first reply frame taken by the connector.
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
        self.asr_queue: float | None = None
        self.asr_decode: float | None = None
        self.early = ""  # why the turn ended before the full silence window ("complete", "range", "sentence")
        self.reported = False
        self.premature = False  # the caller spoke again right after this turn was ended
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

    def recognized(self, queue_seconds: float, decode_seconds: float) -> None:
        """The recognizer's own account: time waiting for a worker, time decoding."""
        self.asr_queue = max(0.0, float(queue_seconds))
        self.asr_decode = max(0.0, float(decode_seconds))

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

    def stages(self) -> dict[str, float | None]:
        """The stage split of the module docstring (None: the stage did not happen)."""
        t = self.as_dict()
        return {
            "endpoint": t["endpoint_wait"] if self.kind != "dtmf" else 0.0,
            "asr_queue": None if self.asr_queue is None else round(self.asr_queue, 4),
            "asr_decode": None if self.asr_decode is None else round(self.asr_decode, 4),
            "recognition": t["recognition"],
            "queue": t["queue"],
            "dialog": t["dialog"],
            "tts": t["tts"],
            "send": self._span(self._tts_first, self._first_frame),
            "total": t["total"],
        }

    def wall_marks(self) -> dict[str, float | None]:
        """``time.perf_counter`` of the decision and of the first reply frame taken, and the
        caller's speech end placed on that clock (the decision minus the endpoint wait): on Linux
        the clock is system-wide, so a bench caller's own marks compare with these."""
        speech_end = None if self._decided is None else self._decided - self.endpoint_wait
        return {"speech_end": speech_end, "decided": self._decided, "first_frame": self._first_frame}

    def log_payload(self) -> dict[str, Any]:
        """What the conversation's event log keeps of this turn: kinds and times, never words."""
        return {
            "kind": self.kind,
            "expect": self.expect_kind,
            "engine": self.engine,
            "speculative": self.speculative,
            "early": self.early,
            "cut": self.cut,
            "premature": self.premature,
            "audio_seconds": round(self.audio_seconds, 3),
            "stages_ms": {k: (None if v is None else round(v * 1000)) for k, v in self.stages().items()},
        }

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
            "early": self.early,
            "cut": self.cut,
            "audio_seconds": round(self.audio_seconds, 3),
            "asr_queue": None if self.asr_queue is None else round(self.asr_queue, 4),
            "asr_decode": None if self.asr_decode is None else round(self.asr_decode, 4),
            "send": self._span(self._tts_first, self._first_frame),
            "endpoint_wait": round(self.endpoint_wait, 4),
            "recognition": self._span(rec_from, self._rec_done),
            "recognition_cpu_wall": self._span(self._rec_start, self._rec_done),
            "queue": self._span(self._ready(decided), self._dialog_start),
            "dialog": self._span(self._dialog_start, self._dialog_done),
            "tts": self._span(self._dialog_done, self._tts_first),
            "total": total,
        }
