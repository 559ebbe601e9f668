"""The caller's side of a call: when a turn is over, what it said, and whether it interrupts.

Mixed into ``VoiceSession`` (gateway/voice/session.py), which owns the state used here (the
endpointer, the playback queue, the pipeline's recognizer, the worker's inbox). Per turn: a
speculative decode in the caller's pause (``_start_speculative``) whose transcript may end the
turn sooner or later (``_judge_pause``, ``gateway/voice/turn_end.py``) and is reused when only
silence followed it (``_end_of_turn``); speech over the bot's statement is held until it is known
to be a nod or an interruption (``_backchannel_verdict``, ``gateway/voice/backchannel.py``); each
turn's stage split goes to ``/metrics``, the log and the event log (``_report_turn``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.core.actions import Expect
from gateway.voice.backchannel import is_backchannel
from gateway.voice.endpoint import MaxUtterance, SpeechEnded, SpeechPaused
from gateway.voice.timing import PREMATURE_SECONDS, TurnTimingLog, format_stages
from gateway.voice.turn_end import COMPLETE, HOLD, SENTENCE, judge
from gateway.voice.turns import TurnTimer

log = logging.getLogger("gateway.voice.session")

RECOGNITION_TIMEOUT = 30.0
"""A recognizer that does not answer within this is treated as failed for the turn."""
OPEN = Expect()
"""What speech over the bot's statement is recognized as (a nod, or whatever the caller says)."""
BACKCHANNEL_DECISION_SECONDS = 0.8
"""Longest the bot stays paused after a short utterance over it, waiting to know whether it was a
nod; past it the utterance is a barge-in (the bot stops, the turn goes to the core)."""
MAX_SPECULATIVE_PER_TURN = 5
"""Speculative decodes per turn at most: a caller who pauses between groups of digits or phrases
still gets one in the pause after the last of them (each new pause cancels the decode of the one
before if it is still waiting); one who pauses often costs at most four wasted decodes, and none
start while utterances wait for a recognizer (``AsrRouter.saturated``)."""


@dataclass
class _Utterance:
    task: asyncio.Task[Any]
    expect: Expect
    timer: TurnTimer



class CallerTurns:
    """Turn-taking for the caller's speech (a ``VoiceSession`` mixin)."""

    # Provided by VoiceSession.
    pipeline: Any
    core: Any
    endpointer: Any
    playback: Any
    expect: Expect
    call_id: str
    conversation_id: str
    sample_rate: int
    turns: list[TurnTimer]
    barge_ins: list[dict[str, Any]]
    speculative_discarded: int
    premature_cutins: int
    _inbox: asyncio.Queue[tuple[str, Any]]
    _progress: asyncio.Event
    _stopped: bool
    _interruptions: int
    _speculative: tuple[tuple[float, int], "_Utterance"] | None
    _speculative_count: int
    _held_since: float | None
    _held: "_Utterance | None"
    _held_until: tuple[float, float]  # (audio time the nod-or-not decision is due, speech onset)
    _over_statement: bool
    _pending_turn: TurnTimer | None
    _last_turn: TurnTimer | None
    _last_decided_at: float

    def _cut_in(self, onset: float) -> None:
        """A barge-in: the rest of the bot's answer is dropped."""
        self._held_since = None
        dropped = self.playback.clear()
        self._interruptions += 1
        self.barge_ins.append({"onset": onset, "confirmed": self.endpointer.now, "dropped_seconds": dropped * 0.02,
                               "backchannel": False})
        self.pipeline.turn_metrics.barge_ins.labels(outcome="interrupted").inc()
        log.info("call %s: barge-in at %.2fs", self.call_id, onset)

    def _recognize_task(self, audio: bytes, expect: Expect, timer: TurnTimer, speculative: bool = False) -> _Utterance:
        async def run() -> Any:
            timer.recognition_started()
            try:
                transcript = await asyncio.wait_for(
                    self.pipeline.asr.recognize(audio, self.sample_rate, expect, speculative=speculative),
                    RECOGNITION_TIMEOUT,
                )
            finally:
                timer.recognition_done()
            timer.recognized(getattr(transcript, "queue_seconds", 0.0), getattr(transcript, "decode_seconds", 0.0))
            return transcript

        return _Utterance(asyncio.create_task(run()), expect, timer)

    def _start_speculative(self, ev: SpeechPaused) -> None:
        # A speculative decode only where a recognizer is idle: on a busy machine the turns that
        # have ended go first, and this turn simply waits for its window.
        if self._speculative_count >= MAX_SPECULATIVE_PER_TURN or self.pipeline.asr.saturated:
            return
        self._speculative_count += 1
        if self._speculative is not None:
            self._speculative[1].task.cancel()
            self.speculative_discarded += 1
        expect = OPEN if self._over_statement else self.expect
        utt = self._recognize_task(ev.audio, expect, TurnTimer(expect), speculative=True)
        self._speculative = ((ev.started_at, -ev.serial), utt)
        utt.task.add_done_callback(lambda _task: self._progress.set())
        if self.endpointer.config.early_end:
            utt.task.add_done_callback(lambda _task, serial=ev.serial: self._judge_pause(serial, utt))

    def _judge_pause(self, serial: int, utt: _Utterance) -> None:
        """The speculative transcript is in: end the turn sooner (complete answer, sentence) or
        later (trailing "and", "um") if the caller is still silent in that pause."""
        self._progress.set()
        task = utt.task
        if self._stopped or task.cancelled() or task.exception() is not None:
            return
        if self._speculative is None or self._speculative[1] is not utt:
            return
        text = getattr(task.result(), "text", "") or ""
        verdict = judge(text, utt.expect)
        if self._held_since is not None and is_backchannel(text):
            verdict = COMPLETE  # a nod over the bot: let it go on at once
        cfg = self.endpointer.config
        window = {COMPLETE: cfg.complete_end_ms, SENTENCE: cfg.sentence_end_ms, HOLD: cfg.hold_ms}.get(verdict)
        if window is not None:
            self.endpointer.set_window(serial, window, verdict)

    def _end_of_turn(self, ev: SpeechEnded | MaxUtterance, cut: bool) -> None:
        self.endpointer.disarm_no_input()
        self._speculative_count = 0
        held, self._held_since = self._held_since, None
        # Words over the bot's statement answer no question yet: they are heard as open speech.
        expect = OPEN if self._over_statement else self.expect
        self._over_statement = False
        spec, self._speculative = self._speculative, None
        # The speculative decode's audio is the turn's when only silence followed it.
        same_audio = spec is not None and (spec[0] == (ev.started_at, len(ev.audio)) or (
            isinstance(ev, SpeechEnded) and ev.pause and spec[0] == (ev.started_at, -ev.pause)))
        if spec is not None and same_audio and not cut and spec[1].expect == expect:
            utt = spec[1]
            utt.timer.speculative = True
        else:
            if spec is not None:
                spec[1].task.cancel()
                self.speculative_discarded += 1
            utt = self._recognize_task(ev.audio, expect, TurnTimer(expect))
        utt.timer.endpoint(speech_end=ev.at, decided=self.endpointer.now, cut=cut,
                           audio_seconds=len(ev.audio) / (2 * self.sample_rate))
        utt.timer.early = ev.early if isinstance(ev, SpeechEnded) else ""
        self._last_turn, self._last_decided_at = utt.timer, self.endpointer.now
        if held is not None and self.playback.talking:
            # Short speech over the bot's statement: a nod lets it go on, anything else cuts in.
            self._held = utt
            self._held_until = (self.endpointer.now + BACKCHANNEL_DECISION_SECONDS, held)
            utt.task.add_done_callback(lambda _task: self._backchannel_verdict(utt, held))
            return
        self._queue_turn(utt)

    def _queue_turn(self, utt: _Utterance) -> None:
        self._pending_turn = utt.timer
        self.turns.append(utt.timer)
        self._inbox.put_nowait(("turn", utt))

    def _check_held(self, now: float) -> None:
        """Per frame (audio clock): no transcript in time (a busy recognizer) for speech held over
        the bot: it does not stay silent waiting; the speech is taken as an interruption, as every
        barge-in was before backchannels."""
        utt = self._held
        if utt is None or self._stopped or now < self._held_until[0]:
            return
        onset = self._held_until[1]
        self._held = None
        log.info("call %s: no verdict on speech over the bot within %.1fs; taken as a barge-in",
                 self.call_id, BACKCHANNEL_DECISION_SECONDS)
        if self.playback.talking:
            self._cut_in(onset)
        self._queue_turn(utt)

    def _backchannel_verdict(self, utt: _Utterance, onset: float) -> None:
        if self._held is not utt:
            return  # decided already (_check_held)
        self._held = None
        self._progress.set()
        if self._stopped:
            return
        task = utt.task
        text = "" if task.cancelled() or task.exception() is not None else (getattr(task.result(), "text", "") or "")
        if is_backchannel(text) and self.playback.talking:
            if self._held_since is None:  # the caller is quiet again (else their next words decide)
                self.playback.resume()
            self.barge_ins.append({"onset": onset, "confirmed": self.endpointer.now, "dropped_seconds": 0.0,
                                   "backchannel": True})
            self.pipeline.turn_metrics.barge_ins.labels(outcome="backchannel").inc()
            log.info("call %s: a backchannel at %.2fs; the bot goes on", self.call_id, onset)
            self._last_turn = None
            return
        if self.playback.talking:
            self._cut_in(onset)
        self._queue_turn(utt)

    def _check_premature(self, speech_at: float) -> None:
        """The caller spoke again right after a turn was ended: that turn was cut too soon."""
        last = self._last_turn
        if last is not None and not last.premature and speech_at - self._last_decided_at < PREMATURE_SECONDS:
            last.premature = True
            self.premature_cutins += 1
            self.pipeline.turn_metrics.premature.inc()
            log.info("call %s: the caller went on %.2fs after the turn was ended (%s)", self.call_id,
                     max(0.0, speech_at - self._last_decided_at), last.early or "silence window")

    def _report_turn(self, timer: TurnTimer) -> None:
        """A turn is answered (or over without an answer): its stages to /metrics, the log, the event log."""
        if timer.reported:
            return
        timer.reported = True
        self.pipeline.turn_metrics.observe(timer)
        log.info("call %s: %s turn (%s%s): %s", self.call_id, timer.kind, timer.engine or "-",
                 ", speculative" if timer.speculative else "", format_stages(timer.stages()))
        if isinstance(self.core, TurnTimingLog) and self.conversation_id and not self._stopped:
            self._inbox.put_nowait(("timing", timer.log_payload()))

