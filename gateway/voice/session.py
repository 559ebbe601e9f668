"""VoiceSession: one phone call's audio path between a connector and the conversation core.

A connector (AudioSocket, SIP, ...) is a thin adapter around this object: it pushes the
caller's audio and DTMF in, pulls exactly one 20 ms frame of bot audio per tick, and hangs up
when ``ended`` is set. Inside, per caller frame: VAD -> endpointer -> (barge-in, turn end,
no-input). A finished turn is recognized at once (recognition is scheduled, never awaited on
the connector's call), the text goes to the core as ``UserSaid`` and the core's actions are
spoken through TTS into the playback queue, sentence by sentence. When a turn ends, how speech
over the bot is taken and where each turn's time went live in ``caller_turns.py``; how the
core's actions are spoken in ``replies.py``.

Timers (no-input, inter-digit) run on the caller's audio clock (frames received), so a
simulated call behaves exactly as a real one, only faster. One worker task per call carries
out the core's actions in order; anything that goes wrong there is logged with the call id,
the caller hears a short apology and this call ends; other calls are not touched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, Protocol

from gateway.core.actions import Expect, Transfer
from gateway.core.events import (
    CallStarted,
    ChannelClosed,
    DtmfPressed,
    Event,
    RecognitionFailed,
    Silence,
    UserSaid,
)
from gateway.voice.amd import AmdConfig
from gateway.voice.answering import AnswerWatch
from gateway.voice.audio import frame_bytes as frame_size
from gateway.voice.endpoint import (
    EndpointConfig,
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
from gateway.voice.caller_turns import CallerTurns, _Utterance
from gateway.voice.replies import BotReplies
from gateway.voice.turns import TurnTimer

if TYPE_CHECKING:
    from gateway.voice.pipeline import VoicePipeline
    from gateway.voice.vad import Vad

log = logging.getLogger(__name__)

DTMF_DIGITS = frozenset("0123456789*#ABCD")
INTER_DIGIT_SECONDS = 2.0
"""Pause after a key press that sends the digits collected so far."""
CORE_TIMEOUT = 15.0
"""Longest wait for the conversation core to answer one event."""
STOP_GRACE_SECONDS = 2.0
"""How long ``stop`` waits for the cancelled worker before cancelling it again."""
STOP_CANCEL_ATTEMPTS = 5
"""Cancellations ``stop`` tries before leaving a stuck worker behind (the call ends regardless)."""
MAX_PUSH_BYTES = 1 << 20
"""Caller audio buffered between frames at most (a misbehaving connector cannot grow it)."""
class CallControl(Protocol):
    """What a connector offers the session to steer the call (AMI Redirect, SIP REFER, ...)."""

    async def transfer(self, conversation_id: str, action: Transfer) -> bool: ...

    async def hangup(self, reason: str) -> None: ...


class VoiceSession(BotReplies, CallerTurns):
    """One call: frames in, frames out, events to the core, actions from it."""

    def __init__(
        self,
        pipeline: "VoicePipeline",
        *,
        call_id: str,
        sample_rate: int = 8000,
        caller_id: str = "",
        dialed: str = "",
        conversation_id: str = "",
        control: CallControl | None = None,
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
        self.control = control
        self.outbound = outbound
        self.channel = channel
        self.callback = callback  # the nonce of a call the core itself placed (proves that call)
        self.attestation = attestation  # STIR/SHAKEN level the PBX verified, if it says
        self.session_id = ""  # the core's id for this call's session: what the caller proves is bound to it
        self.journey = ""
        voice = pipeline.settings.voice
        self.no_input_default = float(voice.endpoint.no_input_seconds)
        self.endpointer = Endpointer(EndpointConfig.from_settings(voice), sample_rate)
        self.playback = Playback(self.frame_bytes)
        amd = voice.amd
        self._answer = AnswerWatch(sample_rate, AmdConfig(bias=amd.bias, max_seconds=amd.max_seconds), channel) \
            if outbound and amd.enabled else None
        self.ended = asyncio.Event()
        self.expect = Expect()
        self.transcript: list[tuple[str, str]] = []
        self.turns: list[TurnTimer] = []
        self.barge_ins: list[dict[str, float]] = []
        self.end_reason = ""
        self._vad: Vad | None = None
        self._inbuf = bytearray()
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self._progress = asyncio.Event()
        self._drained = asyncio.Event()
        self._digits: list[str] = []
        self._digit_deadline: float | None = None
        self._speculative: tuple[tuple[float, int], _Utterance] | None = None  # ((start, -pause), decode)
        self._pending_turn: TurnTimer | None = None
        self._listening = True
        self._stopped = False
        self._failed = False
        self._onset_tick: int | None = None
        self._interruptions = 0  # barge-ins and key presses that cut the bot short
        self.speculative_discarded = 0  # speculative decodes wasted because the caller went on
        self.premature_cutins = 0  # turns ended while the caller had not finished (spoke again at once)
        self._last_turn: TurnTimer | None = None
        self._last_decided_at = -1e9  # audio time of the last end-of-turn decision
        self.superseded_replies = 0  # prompts not spoken because the caller had already spoken again
        self._speculative_count = 0
        self._held_since: float | None = None  # onset of caller speech over a statement, bot paused, undecided
        self._held: _Utterance | None = None  # its recognition, deciding between a nod and a barge-in
        self._held_until = (0.0, 0.0)
        self._over_statement = False  # this turn began over a statement of the bot's
        self.on_closed: Callable[[VoiceSession], None] | None = None

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
        log.info("call %s: conversation %s (%s)", self.call_id, self.conversation_id,
                 "resumed" if opened.resumed else "new")
        if self._answer is not None:
            self._answer.hold(opened.actions)  # spoken once a person is heard (gateway.voice.answering)
            return
        self._inbox.put_nowait(("actions", (opened.actions, None)))

    def deliver(self, actions: list[Any]) -> bool:
        """Carry out actions the core decided for this call outside its own turns (a supervisor's
        take-over or steering, decided on any node): queued like the answer to a turn."""
        if self._stopped or self.ended.is_set():
            return False
        self._inbox.put_nowait(("actions", (list(actions), None)))
        return True

    async def stop(self, reason: str = "hangup") -> None:
        """The far end went away: stop work, tell the core (``ChannelClosed``), free the VAD."""
        if self._stopped:
            return
        self._stopped = True
        self._listening = False
        self.end_reason = self.end_reason or reason
        if self._worker is not None and self._worker is not asyncio.current_task():
            await self._cancel_worker(self._worker)
        if self._speculative is not None:
            self._speculative[1].task.cancel()
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
        if self._vad is not None:
            self._vad.close()
            self._vad = None
        self.ended.set()
        self._progress.set()
        if self.on_closed is not None:
            self.on_closed(self)

    async def _cancel_worker(self, worker: asyncio.Task) -> None:
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

    # -- connector side ------------------------------------------------------------------
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
                self._inbox.put_nowait(("answered", answered))
        if self.playback.talking and self.playback.barge_in_allowed:
            self.playback.clear()
            self._interruptions += 1
        self.endpointer.disarm_no_input()
        self._digits.append(digit)
        limit = self.expect.max_digits if self.expect.kind == "digits" else 0
        if digit == "#" or (limit and len([d for d in self._digits if d != "#"]) >= limit):
            self._flush_digits()
        else:
            self._digit_deadline = self.endpointer.now + INTER_DIGIT_SECONDS

    def pull_frame(self) -> bytes:
        """The next 20 ms of bot audio (silence when there is none); never blocks."""
        return self.playback.pull_frame()

    @property
    def busy(self) -> bool:
        """Work is queued or running (recognition, the core, synthesis, a speculative decode)."""
        return (self._busy or not self._inbox.empty() or self._pending_turn is not None or self.speculating
                or self._held is not None)

    @property
    def deciding(self) -> bool:
        """A decision about the caller's turn waits for a transcript (its end, or a nod or a barge-in)."""
        return self.speculating or self._held is not None

    @property
    def speculating(self) -> bool:
        """A speculative decode of the turn so far is running."""
        return self._speculative is not None and not self._speculative[1].task.done()

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
            "speculative_discarded": self.speculative_discarded,
            "premature_cutins": self.premature_cutins,
            "superseded_replies": self.superseded_replies,
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
                self._inbox.put_nowait(("answered", answered))
            return
        playback = self.playback
        level = playback.last_level if playback.talking else None
        events = self.endpointer.process(prob, frame, level, playback.barge_in_allowed)
        now = self.endpointer.now
        if self._digit_deadline is not None and now >= self._digit_deadline:
            self._flush_digits()
        for ev in events:
            if isinstance(ev, SpeechOnset):
                if ev.during_playback and playback.talking:
                    playback.pause()
                    self._onset_tick = playback.ticks
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
            elif isinstance(ev, SpeechPaused):
                self._start_speculative(ev)
            elif isinstance(ev, (SpeechEnded, MaxUtterance)):
                self._end_of_turn(ev, cut=isinstance(ev, MaxUtterance))
            elif isinstance(ev, NoInput):
                self._inbox.put_nowait(("silence", round(ev.waited, 2)))
        self._check_held(now)
        held = self._held_since
        if held is not None and self.endpointer.talking and now - held > self.endpointer.config.backchannel_max_ms / 1000:
            self._cut_in(held)  # too long for a nod: the caller is taking the turn

    def _flush_digits(self) -> None:
        digits, self._digits = self._digits, []
        self._digit_deadline = None
        if digits:
            self._inbox.put_nowait(("digits", digits))

    # -- worker --------------------------------------------------------------------------
    async def _work(self) -> None:
        while not self._stopped:
            kind, item = await self._inbox.get()
            self._busy = True
            try:
                await self._run(kind, item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - contain to this call
                log.exception("call %s: turn failed", self.call_id)
                await self._apologize_and_end(exc)
                return
            finally:
                self._busy = False
                self._progress.set()

    async def _run(self, kind: str, item: Any) -> None:
        if kind == "actions":
            actions, timer = item
            await self._perform(actions, timer)
        elif kind == "turn":
            await self._turn(item)
        elif kind == "silence":
            await self._send(Silence(seconds=item, channel=self.channel), None)
        elif kind == "digits":
            timer = TurnTimer(Expect(kind="digits"), kind="dtmf")
            timer.decided_now()
            timer.text = "".join(item)
            self.turns.append(timer)
            for digit in item:
                self.transcript.append(("caller", f"[DTMF {digit}]"))
                await self._send(DtmfPressed(digit=digit, channel=self.channel), timer)
        elif kind == "answered":
            await self._perform(item.opening, None)  # a person hears the journey at once
            await self._send(item.event, None)  # the verdict for the record; a machine gets its message
        elif kind == "timing":
            try:
                await asyncio.wait_for(self.core.log_turn_timing(self.conversation_id, item), CORE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a lost timing entry must not cost the call
                log.warning("call %s: turn timing not logged: %s", self.call_id, exc)
        elif kind == "fail":
            raise item

    async def _turn(self, utt: _Utterance) -> None:
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
        self._pending_turn = None
        await self._send(event, timer)

    async def _send(self, event: Event, timer: TurnTimer | None) -> None:
        if timer is not None:
            timer.dialog_started()
        actions = await asyncio.wait_for(self.core.handle(self.conversation_id, event, session_id=self.session_id),
                                         CORE_TIMEOUT)
        if timer is not None:
            timer.dialog_done()
        await self._perform(actions, timer)
        if timer is not None and not timer.first_audio_seen:
            self._report_turn(timer)  # answered without speech (a transfer, a hangup, nothing to say)

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
            self._inbox.put_nowait(("fail", exc))
