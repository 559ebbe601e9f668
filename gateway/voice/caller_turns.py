"""The caller's side of a call: when a turn is over, what it said, and whether it interrupts.

``CallerTurns`` is one collaborator of ``VoiceSession`` (gateway/voice/session.py), built with
what it works with: the call's endpointer and playback queue, the recognizer, the turn metrics,
the session's work queue (finished turns go there) and its event stream (a cut-in tells the
connector to drop buffered audio). The session hands it each frame's endpointer events with
what the bot last asked (``on_endpoint``). Per turn: a speculative decode in the caller's pause
(``_start_speculative``) whose transcript may end the turn sooner or later (``_judge_pause``,
``gateway/voice/turn_end.py``) and is reused when only silence followed it (``_end_of_turn``);
at a closed question the turn's audio also streams to the closed-set recognizer as it comes
(``_stream``): its answer so far is judged in every pause, and its final answer is in hand as
the turn ends;
speech over the bot's statement is held until it is known to be a nod or an interruption
(``_backchannel_verdict``, ``gateway/voice/backchannel.py``); each turn's stage split goes to
``/metrics``, the log and the event log (``report``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from gateway.core.actions import Expect
from gateway.voice.asr.base import Transcript, Urgency
from gateway.voice.asr.streams import ClosedStream
from gateway.voice.backchannel import is_backchannel
from gateway.voice.endpoint import (
    EndpointEvent,
    Endpointer,
    MaxUtterance,
    NoInput,
    SpeechCancelled,
    SpeechEnded,
    SpeechOnset,
    SpeechPaused,
    SpeechStarted,
)
from gateway.voice.playback import Playback
from gateway.voice.port import ClearAudio, EventStream
from gateway.voice.timing import PREMATURE_SECONDS, TurnMetrics, format_stages
from gateway.voice.turn_end import COMPLETE, HOLD, IN_RANGE, SENTENCE, judge
from gateway.voice.turns import TurnTimer
from gateway.voice.work import CallerTurn, LogTurnTiming, NoInputElapsed, WorkItem

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


class Recognizer(Protocol):
    """The pipeline's speech recognizer (``AsrRouter``) as a call uses it."""

    @property
    def saturated(self) -> bool: ...

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Expect, *, urgency: Urgency | None = None,
                        grammar: Callable[[], Awaitable[Transcript]] | None = None) -> Transcript: ...

    def open_stream(self, expect: Expect, sample_rate: int) -> ClosedStream | None: ...


@dataclass(frozen=True)
class Utterance:
    """A caller utterance being recognized (``task``), with what it was asked, its timer and
    whether a caller waits for it yet (``urgency``: not while it is a decode in a pause)."""

    task: asyncio.Task[Transcript]
    expect: Expect
    timer: TurnTimer
    urgency: Urgency


def _text(task: asyncio.Task[Transcript]) -> str:
    """The transcript of a finished recognition, or ``""`` when it was cancelled or failed."""
    if task.cancelled() or task.exception() is not None:
        return ""
    return task.result().text or ""


class CallerTurns:
    """Turn-taking for one call's caller speech (see the module docstring)."""

    def __init__(
        self,
        *,
        call_id: str,
        sample_rate: int,
        endpointer: Endpointer,
        playback: Playback,
        recognizer: Recognizer,
        metrics: TurnMetrics,
        work: asyncio.Queue[WorkItem],
        progress: asyncio.Event,
        events: EventStream,
        log_timing: bool,
    ) -> None:
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.endpointer = endpointer
        self.playback = playback
        self.recognizer = recognizer
        self.metrics = metrics
        self.work = work
        self.progress = progress
        self.events = events
        self.log_timing = log_timing  # the core keeps each turn's timing in the event log
        self.turns: list[TurnTimer] = []
        self.barge_ins: list[dict[str, Any]] = []
        self.interruptions = 0  # barge-ins and key presses that cut the bot short
        self.speculative_discarded = 0  # speculative decodes wasted because the caller went on
        self.premature_cutins = 0  # turns ended while the caller had not finished (spoke again at once)
        self.pending: TurnTimer | None = None  # a finished turn not yet handed to the core
        self._closed = False
        self._speculative: tuple[tuple[float, int], Utterance] | None = None  # ((start, -pause), decode)
        self._speculative_count = 0
        self._held_since: float | None = None  # onset of caller speech over a statement, bot paused, undecided
        self._held: Utterance | None = None  # its recognition, deciding between a nod and a barge-in
        self._held_until = (0.0, 0.0)  # (audio time the nod-or-not decision is due, speech onset)
        self._over_statement = False  # this turn began over a statement of the bot's
        self._last_turn: TurnTimer | None = None
        self._last_decided_at = -1e9  # audio time of the last end-of-turn decision
        self._stream: ClosedStream | None = None  # this turn's audio, decoded as it comes (closed sets)
        self._stream_at = 0  # the endpointer's frame index the stream is fed up to
        self._stream_bytes = 0  # bytes fed to it
        self._snapshot: asyncio.Task[Transcript] | None = None  # its answer at the last pause

    # -- state ---------------------------------------------------------------------------
    @property
    def speculating(self) -> bool:
        """A speculative decode of the turn so far is running."""
        return self._speculative is not None and not self._speculative[1].task.done()

    @property
    def deciding(self) -> bool:
        """A decision about the caller's turn waits for a transcript (its end, or a nod or a barge-in)."""
        return self.speculating or self._held is not None

    @property
    def busy(self) -> bool:
        """A turn waits for the core, or a decision for a transcript."""
        return self.pending is not None or self.deciding

    def close(self) -> None:
        """The call is over: no more turns; a running speculative decode is cancelled."""
        self._closed = True
        if self._speculative is not None:
            self._speculative[1].task.cancel()
        self._end_stream()

    # -- per frame -----------------------------------------------------------------------
    def on_endpoint(self, events: list[EndpointEvent], now: float, expect: Expect) -> None:
        """One frame's endpointer events; ``expect`` is what the bot last asked."""
        playback = self.playback
        for ev in events:
            if isinstance(ev, SpeechOnset):
                if ev.during_playback and playback.talking:
                    playback.pause()
            elif isinstance(ev, SpeechCancelled):
                playback.resume()
            elif isinstance(ev, SpeechStarted):
                self._check_premature(ev.at)
                if ev.barge_in and playback.talking:
                    active = playback.active
                    if self.endpointer.config.backchannels and active is not None and not active.question:
                        self._held_since = ev.at  # paused since the onset; "uh-huh" or not, decided at its end
                        self._over_statement = True
                    else:
                        self._cut_in(ev.at)
                else:
                    playback.resume()
                self._open_stream(expect)
            elif isinstance(ev, SpeechPaused):
                self._feed_stream()
                self._snapshot_stream(ev, expect)
                self._start_speculative(ev, expect)
            elif isinstance(ev, (SpeechEnded, MaxUtterance)):
                self._end_of_turn(ev, expect, cut=isinstance(ev, MaxUtterance))
            elif isinstance(ev, NoInput):
                self.work.put_nowait(NoInputElapsed(round(ev.waited, 2)))
        self._feed_stream()
        self._check_held(now)
        held = self._held_since
        if held is not None and self.endpointer.talking and now - held > self.endpointer.config.backchannel_max_ms / 1000:
            self._cut_in(held)  # too long for a nod: the caller is taking the turn

    # -- cutting the bot short -------------------------------------------------------------
    def cut(self, cause: str) -> int:
        """The caller cut the bot short: drop what it was saying, here and at the far end."""
        dropped = self.playback.clear()
        self.interruptions += 1
        self.events.emit(ClearAudio(cause))
        return dropped

    def _cut_in(self, onset: float) -> None:
        """A barge-in: the rest of the bot's answer is dropped."""
        self._held_since = None
        dropped = self.cut("barge-in")
        self.barge_ins.append({"onset": onset, "confirmed": self.endpointer.now, "dropped_seconds": dropped * 0.02,
                               "backchannel": False})
        self.metrics.barge_ins.labels(outcome="interrupted").inc()
        log.info("call %s: barge-in at %.2fs", self.call_id, onset)

    # -- recognition -----------------------------------------------------------------------
    def _recognize_task(self, audio: bytes, expect: Expect, timer: TurnTimer, speculative: bool = False,
                        grammar: Callable[[], Awaitable[Transcript]] | None = None) -> Utterance:
        urgency = Urgency(not speculative)

        async def run() -> Transcript:
            timer.recognition_started()
            extra = {"grammar": grammar} if grammar is not None else {}
            try:
                transcript = await asyncio.wait_for(
                    self.recognizer.recognize(audio, self.sample_rate, expect, urgency=urgency, **extra),
                    RECOGNITION_TIMEOUT,
                )
            finally:
                timer.recognition_done()
            timer.recognized(transcript.queue_seconds, transcript.decode_seconds)
            return transcript

        return Utterance(asyncio.create_task(run()), expect, timer, urgency)

    def _start_speculative(self, ev: SpeechPaused, expect: Expect) -> None:
        # A speculative decode only where a recognizer is idle: on a busy machine the turns that
        # have ended go first, and this turn simply waits for its window.
        if self._speculative_count >= MAX_SPECULATIVE_PER_TURN or self.recognizer.saturated:
            return
        self._speculative_count += 1
        if self._speculative is not None:
            self._speculative[1].task.cancel()
            self.speculative_discarded += 1
        expect = OPEN if self._over_statement else expect
        snap = self._snapshot if self._stream is not None and self._stream.expect == expect else None
        utt = self._recognize_task(ev.audio, expect, TurnTimer(expect), speculative=True,
                                   grammar=(lambda: asyncio.shield(snap)) if snap is not None else None)
        self._speculative = ((ev.started_at, -ev.serial), utt)
        utt.task.add_done_callback(lambda _task: self.progress.set())
        if self.endpointer.config.early_end:
            utt.task.add_done_callback(lambda _task, serial=ev.serial: self._judge_pause(serial, utt))

    def _judge_pause(self, serial: int, utt: Utterance) -> None:
        """The speculative transcript is in: end the turn sooner (complete answer, sentence) or
        later (trailing "and", "um") if the caller is still silent in that pause."""
        self.progress.set()
        if self._closed or self._speculative is None or self._speculative[1] is not utt:
            return
        if utt.task.cancelled() or utt.task.exception() is not None:
            return
        transcript = utt.task.result()
        text = transcript.text or ""
        verdict = judge(text, utt.expect, transcript.grammar_text)
        if self._held_since is not None and is_backchannel(text):
            verdict = COMPLETE  # a nod over the bot: let it go on at once
        cfg = self.endpointer.config
        window = {COMPLETE: cfg.complete_end_ms, IN_RANGE: cfg.range_end_ms, SENTENCE: cfg.sentence_end_ms,
                  HOLD: cfg.hold_ms}.get(verdict)
        if window is not None:
            self.endpointer.set_window(serial, window, verdict)

    # -- the closed-set stream ----------------------------------------------------------------
    def _open_stream(self, expect: Expect) -> None:
        """A turn at a closed question starts: its audio streams to the closed-set recognizer."""
        self._end_stream()
        if not expect.closed or self._over_statement:
            return  # words over the bot's statement are heard as open speech
        self._stream = self.recognizer.open_stream(expect, self.sample_rate)
        self._stream_at = self._stream_bytes = 0
        self._feed_stream()

    def _feed_stream(self) -> None:
        stream = self._stream
        if stream is None or not self.endpointer.in_turn:
            return
        pcm, self._stream_at = self.endpointer.audio_since(self._stream_at)
        self._stream_bytes += len(pcm)
        stream.feed(pcm)

    def _snapshot_stream(self, ev: SpeechPaused, expect: Expect) -> None:
        """In a pause: the stream's answer so far may end the turn sooner (``turn_end.judge``)."""
        stream = self._stream
        if stream is None or stream.expect != expect or stream.closed:
            self._snapshot = None
            return
        self._snapshot = snap = asyncio.ensure_future(stream.snapshot())
        snap.add_done_callback(lambda _task: self._judge_snapshot(ev.serial, snap, expect))

    def _judge_snapshot(self, serial: int, snap: asyncio.Future[Transcript], expect: Expect) -> None:
        if snap.cancelled() or snap.exception() is not None:
            return  # no answer so far (the stream failed): the usual window stands
        if self._closed or snap is not self._snapshot or not self.endpointer.config.early_end:
            return
        text = snap.result().text
        verdict = judge(text, expect, text)
        cfg = self.endpointer.config
        window = {COMPLETE: cfg.complete_end_ms, IN_RANGE: cfg.range_end_ms}.get(verdict)
        applied = window is not None and self.endpointer.set_window(serial, window, verdict)
        log.debug("call %s: the grammar so far (pause %d): %s%s", self.call_id, serial, verdict or "unsure",
                  "" if applied or window is None else ", too late (the caller went on)")
        if applied:
            self.progress.set()

    def _end_stream(self, keep: bool = False) -> ClosedStream | None:
        """The turn is over: its stream, handed over when ``keep`` (else dropped)."""
        stream, self._stream, self._snapshot = self._stream, None, None
        if stream is not None and not keep:
            stream.drop()
            return None
        return stream

    # -- the end of a turn -------------------------------------------------------------------
    def _end_of_turn(self, ev: SpeechEnded | MaxUtterance, expect: Expect, cut: bool) -> None:
        self.endpointer.disarm_no_input()
        active = self.playback.active
        if active is not None and active.held_for_caller and self.playback.paused:
            self.cut("superseded")  # the answer held while the caller went on: this turn replaces it
        self._speculative_count = 0
        held, self._held_since = self._held_since, None
        # Words over the bot's statement answer no question yet: they are heard as open speech.
        expect = OPEN if self._over_statement else expect
        self._over_statement = False
        spec, self._speculative = self._speculative, None
        # The speculative decode's audio is the turn's when only silence followed it.
        same_audio = spec is not None and (spec[0] == (ev.started_at, len(ev.audio)) or (
            isinstance(ev, SpeechEnded) and ev.pause and spec[0] == (ev.started_at, -ev.pause)))
        stream = self._end_stream(keep=not cut)
        if spec is not None and same_audio and not cut and spec[1].expect == expect:
            utt = spec[1]
            utt.timer.speculative = True
            utt.urgency.hasten()  # the turn's own decode now: it waits no more behind turns ended later
            if stream is not None:
                stream.drop()
        else:
            if spec is not None:
                spec[1].task.cancel()
                self.speculative_discarded += 1
            finish = None
            if stream is not None and stream.expect == expect:
                stream.feed(ev.audio[self._stream_bytes:])  # the frames of this last tick
                finish = stream.finish
            elif stream is not None:
                stream.drop()
            utt = self._recognize_task(ev.audio, expect, TurnTimer(expect), grammar=finish)
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

    def _queue_turn(self, utt: Utterance) -> None:
        self.pending = utt.timer
        self.turns.append(utt.timer)
        self.work.put_nowait(CallerTurn(utt))

    def _check_held(self, now: float) -> None:
        """Per frame (audio clock): no transcript in time (a busy recognizer) for speech held over
        the bot: it does not stay silent waiting; the speech is taken as an interruption, as every
        barge-in was before backchannels."""
        utt = self._held
        if utt is None or self._closed or now < self._held_until[0]:
            return
        onset = self._held_until[1]
        self._held = None
        log.info("call %s: no verdict on speech over the bot within %.1fs; taken as a barge-in",
                 self.call_id, BACKCHANNEL_DECISION_SECONDS)
        if self.playback.talking:
            self._cut_in(onset)
        self._queue_turn(utt)

    def _backchannel_verdict(self, utt: Utterance, onset: float) -> None:
        if self._held is not utt:
            return  # decided already (_check_held)
        self._held = None
        self.progress.set()
        if self._closed:
            return
        if is_backchannel(_text(utt.task)) and self.playback.talking:
            if self._held_since is None:  # the caller is quiet again (else their next words decide)
                self.playback.resume()
            self.barge_ins.append({"onset": onset, "confirmed": self.endpointer.now, "dropped_seconds": 0.0,
                                   "backchannel": True})
            self.metrics.barge_ins.labels(outcome="backchannel").inc()
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
            self.metrics.premature.inc()
            log.info("call %s: the caller went on %.2fs after the turn was ended (%s)", self.call_id,
                     max(0.0, speech_at - self._last_decided_at), last.early or "silence window")

    def report(self, timer: TurnTimer) -> None:
        """A turn is answered (or over without an answer): its stages to /metrics, the log, the event log."""
        if timer.reported:
            return
        timer.reported = True
        self.metrics.observe(timer)
        log.info("call %s: %s turn (%s%s): %s", self.call_id, timer.kind, timer.engine or "-",
                 ", speculative" if timer.speculative else "", format_stages(timer.stages()))
        if self.log_timing and not self._closed:
            self.work.put_nowait(LogTurnTiming(timer.log_payload()))
