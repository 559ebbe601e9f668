"""VoiceSession: one phone call's audio path between a connector and the conversation core.

A connector (AudioSocket, SIP, ...) talks to it through the voice port (``gateway/voice/port.py``):
it pushes the caller's audio and DTMF in, pulls exactly one 20 ms frame of bot audio per tick,
and carries out the session's events (opened, clear the buffered audio, transfer, hang up,
ended). Inside, per caller frame: VAD -> endpointer -> (barge-in, turn end, no-input). A
finished turn is recognized at once (recognition is scheduled, never awaited on the
connector's call), the text goes to the core as ``UserSaid`` and the core's actions are spoken
through TTS into the playback queue, sentence by sentence. When a turn ends, how speech over
the bot is taken and where each turn's time went is ``CallerTurns`` (``caller_turns.py``); how
the core's actions are spoken is ``BotReplies`` (``replies.py``); the queued work items are in
``work.py``; the call's recording, when recordings are on, is ``SessionRecording``
(``recording.py``): it sees every caller frame, every bot frame pulled and every question.

Timers (no-input, inter-digit) run on the caller's audio clock (frames received), so a
simulated call behaves exactly as a real one, only faster. One worker task per call carries
out the queued work in order; anything that goes wrong there is logged with the call id, the
caller hears a short apology and this call ends; other calls are not touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from gateway.core.actions import Action, Ask, Expect, Transfer
from gateway.core.events import (
    CallStarted,
    ChannelClosed,
    DtmfPressed,
    Event,
    RecognitionFailed,
    Silence,
    TransferFailed,
    UserSaid,
)
from gateway.voice.amd import AmdConfig
from gateway.voice.answering import Answered, AnswerWatch
from gateway.voice.audio import frame_bytes as frame_size
from gateway.voice.caller_turns import CallerTurns, Utterance
from gateway.voice.endpoint import EndpointConfig, Endpointer
from gateway.voice.playback import Playback
from gateway.voice.port import CallOpened, EventStream, HangUp, SessionEnded, SessionEvent, TransferCall
from gateway.voice.recording import SessionRecording
from gateway.voice.replies import BotReplies
from gateway.voice.timing import TurnTimingLog
from gateway.voice.turns import TurnTimer
from gateway.voice.work import (
    CallerTurn,
    Failure,
    KeysEntered,
    LogTurnTiming,
    NoInputElapsed,
    PerformActions,
    TransferNotTaken,
    WorkItem,
)

if TYPE_CHECKING:
    from gateway.voice.pipeline import VoicePipeline
    from gateway.voice.vad import Vad

log = logging.getLogger(__name__)

DTMF_DIGITS = frozenset("0123456789*#ABCD")
INTER_DIGIT_SECONDS = 2.0
"""Pause after a key press that sends the digits collected so far."""
CORE_TIMEOUT = 15.0
"""Longest wait for the conversation core to answer one event."""
TRANSFER_TIMEOUT = 30.0
"""Longest wait for the connector to say whether the PBX took a transfer (a SIP REFER is given
15 s); past it the transfer counts as failed and the call goes on."""
STOP_GRACE_SECONDS = 2.0
"""How long ``stop`` waits for the cancelled worker before cancelling it again."""
STOP_CANCEL_ATTEMPTS = 5
"""Cancellations ``stop`` tries before leaving a stuck worker behind (the call ends regardless)."""
SLOW_WORK_SECONDS = 1.0
"""A caller's turn that waits longer than this for the call's earlier work is logged, with what it
waited behind (its recognition and dialog stages look quick: the wait is its "queue" stage)."""
MAX_PUSH_BYTES = 1 << 20
"""Caller audio buffered between frames at most (a misbehaving connector cannot grow it)."""


class VoiceSession:
    """One call: frames in, frames out, events to the core, actions from it."""

    def __init__(
        self,
        pipeline: VoicePipeline,
        *,
        call_id: str,
        sample_rate: int = 8000,
        caller_id: str = "",
        dialed: str = "",
        conversation_id: str = "",
        outbound: bool = False,
        channel: str = "voice",
        callback: str = "",
        attestation: str = "",
    ):
        self.pipeline = pipeline
        self.core = pipeline.core
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.frame_bytes = frame_size(sample_rate)
        self.caller_id = caller_id
        self.dialed = dialed
        self.conversation_id = conversation_id
        self.outbound = outbound
        self.channel = channel
        self.callback = callback  # the nonce of a call the core itself placed (proves that call)
        self.attestation = attestation  # STIR/SHAKEN level the PBX verified, if it says
        self.session_id = ""  # the core's id for this call's session: what the caller proves is bound to it
        self.journey = ""
        voice = pipeline.settings.voice
        self.endpointer = Endpointer(EndpointConfig.from_settings(voice), sample_rate)
        self.playback = Playback(self.frame_bytes)
        amd = voice.amd
        self._answer = AnswerWatch(sample_rate, AmdConfig(bias=amd.bias, max_seconds=amd.max_seconds), channel) \
            if outbound and amd.enabled else None
        self.ended = asyncio.Event()
        self.expect = Expect()
        self.transcript: list[tuple[str, str]] = []
        self.end_reason = ""
        self.events = EventStream(call_id)
        self._vad: Vad | None = None
        self._inbuf = bytearray()
        self._work_items: asyncio.Queue[WorkItem] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._working = False
        self._previous: tuple[str, float] = ("", 0.0)  # the work item before this one, and its seconds
        self._progress = asyncio.Event()
        self._digits: list[str] = []
        self._digit_deadline: float | None = None
        self._listening = True
        self._stopped = False
        self._failed = False
        self.caller = CallerTurns(
            call_id=call_id, sample_rate=sample_rate, endpointer=self.endpointer, playback=self.playback,
            recognizer=pipeline.asr, metrics=pipeline.turn_metrics, work=self._work_items,
            progress=self._progress, events=self.events, log_timing=isinstance(self.core, TurnTimingLog))
        self.replies = BotReplies(
            call_id=call_id, sample_rate=sample_rate, playback=self.playback, endpointer=self.endpointer,
            tts=pipeline.tts, turns=self.caller, transcript=self.transcript, progress=self._progress,
            transfer=self._transfer, no_input_seconds=float(voice.endpoint.no_input_seconds))
        settings = pipeline.settings
        self.recording = SessionRecording(settings.recordings, settings.data_path("."), call_id=call_id,
                                          channel=channel, sample_rate=sample_rate)
        self.on_closed: Callable[[VoiceSession], None] | None = None
        self.holds_slot = False  # the session took its slot of voice.max_calls (VoicePipeline.session)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open (or resume) the conversation with ``CallStarted`` and queue the greeting."""
        self._worker = asyncio.create_task(self._work(), name=f"voice-{self.call_id}")
        try:
            self._vad = await self.pipeline.vad_pool.acquire_async(self.sample_rate)
            event = CallStarted(
                caller_id=self.caller_id,
                dialed=self.dialed,
                channel=self.channel,
                call_id=self.call_id,
                outbound=self.outbound,
            )
            opened = await asyncio.wait_for(
                self.core.open(
                    self.channel,
                    caller_id=self.caller_id,
                    conversation_id=self.conversation_id,
                    journey=self.journey,
                    event=event,
                    callback=self.callback,
                    attestation=self.attestation,
                ),
                CORE_TIMEOUT,
            )
        except Exception as exc:  # noqa: BLE001 - one call's failure must not escape to the connector
            self._fail(exc)
            return
        self.conversation_id = opened.conversation_id
        self.session_id = opened.session_id
        self.recording.open(self.conversation_id)
        log.info("call %s: conversation %s (%s)", self.call_id, self.conversation_id,
                 "resumed" if opened.resumed else "new")
        self.events.emit(CallOpened(self.conversation_id, opened.resumed))
        if self._answer is not None:
            self._answer.hold(opened.actions)  # spoken once a person is heard (gateway.voice.answering)
            return
        self._work_items.put_nowait(PerformActions(tuple(opened.actions)))

    def deliver(self, actions: list[Action]) -> bool:
        """Carry out actions the core decided for this call outside its own turns (a supervisor's
        take-over or steering, decided on any node): queued like the answer to a turn."""
        if self._stopped or self.ended.is_set():
            return False
        self._work_items.put_nowait(PerformActions(tuple(actions)))
        return True

    async def stop(self, reason: str = "hangup") -> None:
        """The far end went away: stop work, tell the core (``ChannelClosed``), free the VAD."""
        if self._stopped:
            return
        self._stopped = True
        self._listening = False
        self.end_reason = self.end_reason or reason
        self.caller.close()
        self.replies.close()
        if self._worker is not None and self._worker is not asyncio.current_task():
            await self._cancel_worker(self._worker)
        self.playback.clear()
        if self.conversation_id:
            try:
                await asyncio.wait_for(
                    self.core.handle(self.conversation_id, ChannelClosed(reason=reason, channel=self.channel),
                                     session_id=self.session_id),
                    CORE_TIMEOUT,
                )
            except Exception as exc:  # noqa: BLE001 - the call is over either way
                log.warning("call %s: core did not take ChannelClosed: %s", self.call_id, exc)
            await self.recording.close(self.core, self.conversation_id, CORE_TIMEOUT)
        if self._vad is not None:
            self._vad.close()
            self._vad = None
        self.ended.set()
        self._progress.set()
        self.events.emit(SessionEnded(self.end_reason))
        if self.on_closed is not None:
            self.on_closed(self)

    async def _cancel_worker(self, worker: asyncio.Task[None]) -> None:
        """Cancel the worker and wait for it, bounded. Python 3.11's ``asyncio.wait_for`` drops a
        cancellation that lands in the loop iteration where the awaited work finishes, so one
        cancel may not stop the worker: it is repeated, and the worker also checks ``_stopped``."""
        for _ in range(STOP_CANCEL_ATTEMPTS):
            worker.cancel()
            done, _pending = await asyncio.wait({worker}, timeout=STOP_GRACE_SECONDS)
            if done:
                return
        log.error("call %s: the session worker did not stop after %d cancellations; left behind",
                  self.call_id, STOP_CANCEL_ATTEMPTS)

    # -- connector side (gateway.voice.port.CallAudio) --------------------------------------
    def push_audio(self, pcm: bytes) -> None:
        """Caller audio of any length; processed frame by frame (VAD, endpointing)."""
        if self._stopped or not pcm:
            return
        if len(self._inbuf) + len(pcm) > MAX_PUSH_BYTES:
            log.warning("call %s: %d bytes of caller audio at once, dropping the excess", self.call_id, len(pcm))
            pcm = pcm[: max(0, MAX_PUSH_BYTES - len(self._inbuf))]
        self._inbuf += pcm
        fb = self.frame_bytes
        try:
            while len(self._inbuf) >= fb:
                frame = bytes(self._inbuf[:fb])
                del self._inbuf[:fb]
                self.recording.caller(frame)
                self._frame(frame)
        except Exception as exc:  # noqa: BLE001 - contain to this call
            self._inbuf.clear()
            self._fail(exc)

    def push_dtmf(self, digit: str) -> None:
        """One key press: stops a prompt that allows barge-in; digits go to the core in a batch."""
        if self._stopped or not self._listening:
            return
        digit = digit.strip().upper()
        if digit not in DTMF_DIGITS:
            log.warning("call %s: ignoring a DTMF event that is not one key (%d characters)", self.call_id, len(digit))
            return
        if self._answer is not None and not self._answer.done:
            answered = self._answer.key_pressed()
            if answered is not None:
                self._work_items.put_nowait(answered)
        if self.playback.talking and self.playback.barge_in_allowed:
            self.caller.cut("key")
        self.endpointer.disarm_no_input()
        self._digits.append(digit)
        limit = self.expect.max_digits if self.expect.kind == "digits" else 0
        if digit == "#" or (limit and len([d for d in self._digits if d != "#"]) >= limit):
            self._flush_digits()
        else:
            self._digit_deadline = self.endpointer.now + INTER_DIGIT_SECONDS

    def pull_frame(self) -> bytes:
        """The next 20 ms of bot audio (silence when there is none); never blocks."""
        frame = self.playback.pull_frame()
        self.recording.bot(frame)
        return frame

    def next_events(self) -> list[SessionEvent]:
        """What the connector has to carry out since its last call (``gateway.voice.port``)."""
        return self.events.drain()

    async def wait_events(self) -> list[SessionEvent]:
        """The next events for the connector, waiting for at least one."""
        return await self.events.wait()

    # -- state ---------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Work is queued or running (recognition, the core, synthesis, a speculative decode)."""
        return self._working or not self._work_items.empty() or self.caller.busy

    @property
    def deciding(self) -> bool:
        """A decision about the caller's turn waits for a transcript (its end, or a nod or a barge-in)."""
        return self.caller.deciding

    @property
    def speculating(self) -> bool:
        """A speculative decode of the turn so far is running."""
        return self.caller.speculating

    @property
    def turns(self) -> list[TurnTimer]:
        return self.caller.turns

    @property
    def pending_turn(self) -> TurnTimer | None:
        """A caller turn that has ended and waits for the core."""
        return self.caller.pending

    @property
    def barge_ins(self) -> list[dict[str, Any]]:
        return self.caller.barge_ins

    @property
    def speculative_discarded(self) -> int:
        return self.caller.speculative_discarded

    @property
    def premature_cutins(self) -> int:
        return self.caller.premature_cutins

    async def wait_progress(self, timeout: float | None = None) -> None:
        """Wait until audio is queued, work finishes or the call ends (used by simulators)."""
        self._progress.clear()
        if not self.busy or (self.playback.has_audio and not self.deciding) or self.ended.is_set():
            return
        try:
            await asyncio.wait_for(self._progress.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    @property
    def stats(self) -> dict[str, Any]:
        """Turn latencies and counters (see ``TurnTimer.as_dict`` for the fields)."""
        return {
            "call_id": self.call_id,
            "conversation_id": self.conversation_id,
            "audio_seconds": round(self.endpointer.now, 3),
            "frames_out": self.playback.ticks,
            "turns": [t.as_dict() for t in self.turns],
            "barge_ins": list(self.barge_ins),
            "speculative_discarded": self.caller.speculative_discarded,
            "premature_cutins": self.caller.premature_cutins,
            "superseded_replies": self.replies.superseded_replies,
            "ended": self.ended.is_set(),
            "end_reason": self.end_reason,
        }

    # -- per frame -----------------------------------------------------------------------
    def _frame(self, frame: bytes) -> None:
        vad = self._vad
        if vad is None or not self._listening:
            return
        prob = vad.is_speech(frame)
        if self._answer is not None and not self._answer.done:
            # a call the gateway placed: nothing is a turn until it is known who answered
            answered = self._answer.feed(frame, prob >= self.pipeline.settings.voice.vad.threshold)
            if answered is not None:
                self._work_items.put_nowait(answered)
            return
        playback = self.playback
        level = playback.last_level if playback.talking else None
        events = self.endpointer.process(prob, frame, level, playback.barge_in_allowed)
        now = self.endpointer.now
        if self._digit_deadline is not None and now >= self._digit_deadline:
            self._flush_digits()
        self.caller.on_endpoint(events, now, self.expect)

    def _flush_digits(self) -> None:
        digits, self._digits = self._digits, []
        self._digit_deadline = None
        if digits:
            self._work_items.put_nowait(KeysEntered(tuple(digits)))

    # -- worker --------------------------------------------------------------------------
    async def _work(self) -> None:
        while not self._stopped:
            item = await self._work_items.get()
            self._working = True
            started = time.perf_counter()
            try:
                await self._run(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - contain to this call
                log.exception("call %s: turn failed", self.call_id)
                await self._apologize_and_end(exc)
                return
            finally:
                self._working = False
                self._progress.set()
            self._previous = (type(item).__name__, time.perf_counter() - started)

    async def _run(self, item: WorkItem) -> None:
        match item:
            case PerformActions(actions, timer):
                await self._perform(list(actions), timer)
            case CallerTurn(utterance):
                await self._turn(utterance)
            case NoInputElapsed(seconds):
                await self._send(Silence(seconds=seconds, channel=self.channel), None)
            case KeysEntered(digits):
                timer = TurnTimer(Expect(kind="digits"), kind="dtmf")
                timer.decided_now()
                timer.text = "".join(digits)
                self.turns.append(timer)
                for digit in digits:
                    self.transcript.append(("caller", f"[DTMF {digit}]"))
                    await self._send(DtmfPressed(digit=digit, channel=self.channel), timer)
            case Answered(event, opening):
                await self._perform(opening, None)  # a person hears the journey at once
                await self._send(event, None)  # the verdict for the record; a machine gets its message
            case LogTurnTiming(payload):
                await self._log_timing(payload)
            case TransferNotTaken(queue, detail):
                await self._send(TransferFailed(queue=queue, detail=detail, channel=self.channel), None)
            case Failure(error):
                raise error

    async def _log_timing(self, payload: Any) -> None:
        if not self.conversation_id or not isinstance(self.core, TurnTimingLog):
            return
        try:
            await asyncio.wait_for(self.core.log_turn_timing(self.conversation_id, payload), CORE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a lost timing entry must not cost the call
            log.warning("call %s: turn timing not logged: %s", self.call_id, exc)

    async def _turn(self, utt: Utterance) -> None:
        timer = utt.timer
        event: Event
        try:
            transcript = await utt.task
        except asyncio.CancelledError:
            if self._stopped:
                raise
            event = RecognitionFailed(reason="recognition cancelled", channel=self.channel)
        except Exception as exc:  # noqa: BLE001 - an engine failure is a failed turn, not a failed call
            log.warning("call %s: recognition failed: %s", self.call_id, exc)
            event = RecognitionFailed(reason=str(exc) or type(exc).__name__, channel=self.channel)
        else:
            text = (transcript.text or "").strip()
            timer.engine = transcript.engine
            timer.text = text
            if text:
                event = UserSaid(text=text, confidence=float(transcript.confidence), channel=self.channel)
            else:
                event = RecognitionFailed(reason="nothing recognized", channel=self.channel)
        self.transcript.append(("caller", timer.text or "[not recognized]"))
        self.caller.pending = None
        await self._send(event, timer)
        waited = timer.stages()["queue"]
        if waited is not None and waited > SLOW_WORK_SECONDS:
            kind, took = self._previous
            log.warning("call %s: the caller's turn waited %.1f s for the call's earlier work (%s, %.1f s)",
                        self.call_id, waited, kind, took)

    async def _send(self, event: Event, timer: TurnTimer | None) -> None:
        if timer is not None:
            timer.dialog_started()
        actions = await asyncio.wait_for(self.core.handle(self.conversation_id, event, session_id=self.session_id),
                                         CORE_TIMEOUT)
        if timer is not None:
            timer.dialog_done()
        await self._perform(actions, timer)
        if timer is not None and not timer.first_audio_seen:
            self.caller.report(timer)  # answered without speech (a transfer, a hangup, nothing to say)

    async def _perform(self, actions: list[Action], timer: TurnTimer | None) -> None:
        asks = [a for a in actions if isinstance(a, Ask)]
        if asks:
            self.expect = asks[-1].expect
            self.recording.question(self.expect.sensitive)
        ending = await self.replies.perform(actions, timer)
        if ending:
            self._finish(ending)

    async def _transfer(self, action: Transfer) -> bool:
        """Ask the connector to move the call (``TransferCall``) and wait for its answer, bounded."""
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.events.emit(TransferCall(self.conversation_id, action, reply))
        try:
            ok = await asyncio.wait_for(reply, TRANSFER_TIMEOUT)
            detail = "refused by the telephony side"
        except asyncio.TimeoutError:
            log.warning("call %s: the connector did not carry out the transfer within %.0f s",
                        self.call_id, TRANSFER_TIMEOUT)
            ok, detail = False, f"no answer within {TRANSFER_TIMEOUT:.0f} s"
        if not ok:  # the core decides what the caller hears next (the call is still the bot's)
            self._work_items.put_nowait(TransferNotTaken(action.queue, detail))
        return ok

    def _finish(self, reason: str) -> None:
        """The session is done with the call: the connector ends it (``HangUp``)."""
        self.end_reason = reason
        self._listening = False
        self.endpointer.disarm_no_input()
        self.ended.set()
        self._progress.set()
        self.events.emit(HangUp(reason))

    # -- failure -------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        """Contain a failure raised outside the worker: hand it to the worker to end the call."""
        if self._failed:
            return
        log.error("call %s: %s: %s", self.call_id, type(exc).__name__, exc, exc_info=exc)
        self._listening = False
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._apologize_and_end(exc))
        else:
            self._work_items.put_nowait(Failure(exc))

    async def _apologize_and_end(self, exc: BaseException) -> None:
        self._failed = True
        self._listening = False
        await self.replies.apologize()
        self._finish("error")
