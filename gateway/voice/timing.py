"""Where every real turn's time went, for ``/metrics`` and for the conversation's event log.

``TurnMetrics`` holds the voice pipeline's ``prometheus_client`` collectors:

- ``voicegw_turn_stage_seconds{stage, kind}``: one histogram per stage of ``TurnTimer.stages``
  (``endpoint``, ``asr_queue``, ``asr_decode``, ``recognition``, ``queue``, ``dialog``, ``tts``,
  ``send``, ``total``) and turn kind (``open``, ``closed``, ``dtmf``);
- ``voicegw_turn_early_ends_total{reason}``: turns ended before the full silence window because
  the answer was complete (``complete``: a closed-set answer; ``range``: a digit string whose
  count is inside its range of lengths; ``sentence``: open speech);
- ``voicegw_turn_premature_cutins_total``: turns ended while the caller had not finished (they
  spoke again within ``PREMATURE_SECONDS`` of the decision);
- ``voicegw_barge_ins_total{outcome}``: caller speech over the bot (``interrupted``: the bot
  stopped; ``backchannel``: an "uh-huh" the bot talked through).

The event log gets one ``TurnTiming`` entry per turn (``TurnTimer.log_payload``: kinds and
milliseconds, never the words) through any core that offers ``log_turn_timing``
(``TurnTimingLog``; the orchestrator does).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

from prometheus_client import Counter, Histogram

from gateway.voice.turns import TurnTimer

STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Seconds: fine around the 0.5-1.2 s that decides whether a caller feels answered."""
PREMATURE_SECONDS = 1.0
"""A caller who speaks again this soon after the turn was ended had not finished."""


@runtime_checkable
class TurnTimingLog(Protocol):
    """A core that keeps each turn's timing in the conversation's event log."""

    async def log_turn_timing(self, conversation_id: str, timing: Mapping[str, Any]) -> None: ...


class TurnMetrics:
    """The pipeline's turn histograms and counters (unregistered until ``register``)."""

    def __init__(self) -> None:
        self.stage = Histogram("voicegw_turn_stage_seconds", "Seconds each stage of a caller turn took, by stage and kind",
                               ["stage", "kind"], buckets=STAGE_BUCKETS, registry=None)
        self.early = Counter("voicegw_turn_early_ends_total",
                             "Turns ended before the full silence window, by reason (complete, sentence)",
                             ["reason"], registry=None)
        self.premature = Counter("voicegw_turn_premature_cutins_total",
                                 "Turns ended while the caller had not finished (spoke again within 1 s)",
                                 registry=None)
        self.barge_ins = Counter("voicegw_barge_ins_total",
                                 "Caller speech over the bot, by outcome (interrupted, backchannel)",
                                 ["outcome"], registry=None)

    def collectors(self) -> list[Any]:
        return [self.stage, self.early, self.premature, self.barge_ins]

    def observe(self, timer: TurnTimer) -> None:
        """Record one finished turn's stages."""
        for stage, seconds in timer.stages().items():
            if seconds is not None:
                self.stage.labels(stage=stage, kind=timer.kind).observe(seconds)
        if timer.early:
            self.early.labels(reason=timer.early).inc()


def format_stages(stages: Mapping[str, float | None]) -> str:
    """``endpoint 240 | asr_queue 0 | ... | total 690 ms`` (``-``: the stage did not happen)."""
    parts = [f"{k} {'-' if v is None else round(v * 1000)}" for k, v in stages.items()]
    return " | ".join(parts) + " ms"
