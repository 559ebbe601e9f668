"""The bot's side of a call: carrying out the core's actions as speech and call control.

Mixed into ``VoiceSession`` (gateway/voice/session.py), which owns the state used here: the
playback queue, the endpointer (no-input timer), the pipeline's synthesizer and the call control.
``Say``/``Ask`` are synthesized sentence by sentence into the playback queue (the first sentence
plays while the next is made); an ``Ask`` sets what the next turn expects and, once its prompt has
played, starts the no-input timer; ``Transfer`` and ``Hangup`` wait for the announcement or the
goodbye to play first. A barge-in drops what remains of the answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, AsyncIterator, Callable

from gateway.core.actions import Action, Ask, Hangup, Say, Transfer
from gateway.voice.playback import Prompt
from gateway.voice.turns import TurnTimer

log = logging.getLogger("gateway.voice.session")

APOLOGY = "Sorry, something went wrong on our side. Please call again later. Goodbye."
PLAYBACK_GRACE = 10.0
"""Extra wait, beyond the queued audio, for a goodbye to play before hanging up anyway."""
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


class BotReplies:
    """Speech and call control for the actions the core returns (a ``VoiceSession`` mixin)."""

    # Provided by VoiceSession.
    playback: Any
    endpointer: Any
    pipeline: Any
    control: Any
    conversation_id: str
    call_id: str
    sample_rate: int
    expect: Any
    transcript: list[tuple[str, str]]
    ended: asyncio.Event
    end_reason: str
    no_input_default: float
    _interruptions: int
    _listening: bool
    _stopped: bool
    _failed: bool
    _progress: asyncio.Event
    _drained: asyncio.Event
    _pending_turn: Any
    superseded_replies: int

    _report_turn: Callable[[TurnTimer], None]  # CallerTurns'

    async def _perform(self, actions: list[Action], timer: TurnTimer | None) -> None:
        asks = [a for a in actions if isinstance(a, Ask)]
        if asks:
            self.expect = asks[-1].expect
        last: Prompt | None = None
        interruptions = self._interruptions
        for action in actions:
            if isinstance(action, (Say, Ask)):
                if self._interruptions != interruptions:
                    continue  # the caller cut in: the rest of this answer is not spoken
                if self._pending_turn is not None:
                    # The caller finished another turn while this answer was being worked out:
                    # it answers what they said before, so it is not spoken; the next answer is.
                    self.superseded_replies += 1
                    log.info("call %s: answer to an earlier turn not spoken (the caller spoke again): %r",
                             self.call_id, action.text[:60])
                    continue
                last = await self._speak(action.text, action.barge_in, action.prompt_id, timer,
                                         question=isinstance(action, Ask))
                timer = None  # the turn's latency ends at the reply's first prompt
            elif isinstance(action, Transfer):
                await self._wait_played()
                ok = False
                if self.control is not None:
                    ok = await self.control.transfer(self.conversation_id, action)
                log.info("call %s: transfer to %s %s", self.call_id, action.queue, "done" if ok else "failed")
                if ok:
                    self._finish("transferred")
                    return
            elif isinstance(action, Hangup):
                await self._wait_played()
                self._finish(action.reason or "completed")
                if self.control is not None:
                    await self.control.hangup(action.reason or "completed")
                return
            else:
                log.debug("call %s: %s is carried out by another channel", self.call_id, action.kind)
        seconds = asks[-1].expect.no_input_seconds if asks else self.no_input_default
        if last is None or last.finished:
            self._arm_no_input(seconds)
        else:
            last.on_finished = lambda p, s=seconds: self._prompt_finished(p, s)

    def _prompt_finished(self, prompt: Prompt, seconds: float) -> None:
        self._drained.set()
        if not self.playback.talking:
            self._arm_no_input(seconds)

    def _arm_no_input(self, seconds: float) -> None:
        if not self.endpointer.in_turn and self._listening:
            self.endpointer.arm_no_input(seconds)

    async def _speak(self, text: str, barge_in: bool, prompt_id: str, timer: TurnTimer | None, *,
                     question: bool = False) -> Prompt:
        self.endpointer.disarm_no_input()  # the timer restarts when this prompt has played
        prompt = self.playback.start_prompt(text, barge_in=barge_in, prompt_id=prompt_id, question=question)
        prompt.on_finished = lambda p: self._drained.set()

        def first_frame(p: Prompt) -> None:
            self.transcript.append(("bot", text))  # what the caller heard, when it started
            if timer is not None:
                timer.first_frame(self.endpointer.now)
                self._report_turn(timer)

        prompt.on_first_frame = first_frame
        timer_started = False
        try:
            async for chunk in self._synthesize(text, prompt_id):
                if prompt.cut:
                    break
                if timer is not None and not timer_started:
                    timer_started = True
                    timer.tts_first_audio()
                if not self.playback.append(prompt, chunk):
                    if not prompt.cut:
                        log.warning("call %s: playback queue full, reply truncated", self.call_id)
                    break
                self._progress.set()
        except Exception as exc:  # noqa: BLE001 - a prompt that cannot be synthesized is skipped
            log.warning("call %s: speech synthesis failed for %r: %s", self.call_id, text[:60], exc)
        self.playback.close_prompt(prompt)
        self._progress.set()
        return prompt

    async def _synthesize(self, text: str, prompt_id: str) -> AsyncIterator[bytes]:
        tts = self.pipeline.tts
        stream = getattr(tts, "stream", None)
        if stream is not None:
            async for chunk in stream(text, self.sample_rate, prompt_id=prompt_id):
                yield chunk
            return
        parts = [text] if prompt_id else [p for p in _SENTENCE.split(text.strip()) if p]
        for part in parts or [text]:
            yield await tts.synthesize(part, self.sample_rate, prompt_id=prompt_id)

    async def _wait_played(self) -> None:
        deadline = time.monotonic() + self.playback.queued_seconds + PLAYBACK_GRACE
        while self.playback.talking and not self._stopped:
            self._drained.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("call %s: playback did not drain, ending anyway", self.call_id)
                return
            try:
                await asyncio.wait_for(self._drained.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                continue

    def _finish(self, reason: str) -> None:
        self.end_reason = reason
        self._listening = False
        self.endpointer.disarm_no_input()
        self.ended.set()
        self._progress.set()

    async def _apologize_and_end(self, exc: BaseException) -> None:
        self._failed = True
        self._listening = False
        self.playback.clear()
        try:
            await asyncio.wait_for(self._speak(APOLOGY, False, "apology", None), PLAYBACK_GRACE)
            await self._wait_played()
        except Exception as err:  # noqa: BLE001 - the apology is best effort
            log.warning("call %s: could not play the apology: %s", self.call_id, err)
        self._finish("error")
        if self.control is not None:
            try:
                await self.control.hangup("error")
            except Exception as err:  # noqa: BLE001
                log.warning("call %s: hangup after error failed: %s", self.call_id, err)

