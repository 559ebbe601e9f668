"""The bot's side of a call: carrying out the core's actions as speech and call control.

``BotReplies`` is one collaborator of ``VoiceSession`` (gateway/voice/session.py), built with
what it works with: the call's playback queue and endpointer (no-input timer), the synthesizer,
the caller's turns (a cut-in, a newer turn, the turn to report), the transcript, and
``transfer``, the session's way of asking its connector to move the call.
``Say``/``Ask`` are synthesized piece by piece into the playback queue (a long first sentence's
first clause, then sentence by sentence: ``gateway.voice.tts.first_clause``; each piece plays while
the next is made); once an ``Ask``'s prompt has played, the no-input timer starts;
``Transfer`` and ``Hangup`` wait for the announcement or the goodbye to play first. A barge-in
drops what remains of the answer. ``perform`` returns why the call ends (``""``: it goes on).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import AsyncIterator, Awaitable, Callable, Protocol, runtime_checkable

from gateway.core.actions import Action, Ask, Hangup, Say, Transfer
from gateway.voice.caller_turns import CallerTurns
from gateway.voice.endpoint import Endpointer
from gateway.voice.playback import Playback, Prompt
from gateway.voice.turns import TurnTimer

log = logging.getLogger("gateway.voice.session")

APOLOGY = "Sorry, something went wrong on our side. Please call again later. Goodbye."
PLAYBACK_GRACE = 10.0
"""Extra wait, beyond the queued audio, for a goodbye to play before hanging up anyway."""
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


class Synthesizer(Protocol):
    """The pipeline's speech synthesizer as a call uses it."""

    async def synthesize(self, text: str, sample_rate: int, prompt_id: str = "") -> bytes: ...


@runtime_checkable
class StreamingSynthesizer(Protocol):
    """A synthesizer that yields a prompt's audio as it is made (``gateway.voice.tts.Synthesizer``)."""

    def stream(self, text: str, sample_rate: int, prompt_id: str = "") -> AsyncIterator[bytes]: ...


class BotReplies:
    """Speech and call control for the actions the core returns (see the module docstring)."""

    def __init__(
        self,
        *,
        call_id: str,
        sample_rate: int,
        playback: Playback,
        endpointer: Endpointer,
        tts: Synthesizer,
        turns: CallerTurns,
        transcript: list[tuple[str, str]],
        progress: asyncio.Event,
        transfer: Callable[[Transfer], Awaitable[bool]],
        no_input_seconds: float,
    ) -> None:
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.playback = playback
        self.endpointer = endpointer
        self.tts = tts
        self.turns = turns
        self.transcript = transcript
        self.progress = progress
        self.transfer = transfer
        self.no_input_seconds = no_input_seconds
        self.superseded_replies = 0  # prompts not spoken because the caller had already spoken again
        self._drained = asyncio.Event()
        self._closed = False

    def close(self) -> None:
        """The call is over: stop waiting for playback."""
        self._closed = True
        self._drained.set()

    async def perform(self, actions: list[Action], timer: TurnTimer | None) -> str:
        """Speak and carry out ``actions``; why the call ends (``transferred``, the hang-up's
        reason), or ``""`` when it goes on."""
        asks = [a for a in actions if isinstance(a, Ask)]
        last: Prompt | None = None
        interruptions = self.turns.interruptions
        for action in actions:
            if isinstance(action, (Say, Ask)):
                if self.turns.interruptions != interruptions:
                    continue  # the caller cut in: the rest of this answer is not spoken
                if self.turns.pending is not None:
                    # The caller finished another turn while this answer was being worked out:
                    # it answers what they said before, so it is not spoken; the next answer is.
                    self.superseded_replies += 1
                    log.info("call %s: answer to an earlier turn not spoken (the caller spoke again): %r",
                             self.call_id, action.text[:60])
                    continue
                last = await self.speak(action.text, action.barge_in, action.prompt_id, timer,
                                        question=isinstance(action, Ask))
                timer = None  # the turn's latency ends at the reply's first prompt
            elif isinstance(action, Transfer):
                await self.wait_played()
                ok = await self.transfer(action)
                log.info("call %s: transfer to %s %s", self.call_id, action.queue, "done" if ok else "failed")
                if ok:
                    return "transferred"
            elif isinstance(action, Hangup):
                await self.wait_played()
                return action.reason or "completed"
            else:
                log.debug("call %s: %s is carried out by another channel", self.call_id, action.kind)
        seconds = asks[-1].expect.no_input_seconds if asks else self.no_input_seconds
        if last is None or last.finished:
            self._arm_no_input(seconds)
        else:
            last.on_finished = lambda p, s=seconds: self._prompt_finished(p, s)
        return ""

    def _prompt_finished(self, prompt: Prompt, seconds: float) -> None:
        self._drained.set()
        if not self.playback.talking:
            self._arm_no_input(seconds)

    def _arm_no_input(self, seconds: float) -> None:
        if not self.endpointer.in_turn and not self._closed:
            self.endpointer.arm_no_input(seconds)

    async def speak(self, text: str, barge_in: bool, prompt_id: str, timer: TurnTimer | None, *,
                    question: bool = False) -> Prompt:
        """Queue ``text`` as one prompt, synthesized chunk by chunk while the first chunks play."""
        self.endpointer.disarm_no_input()  # the timer restarts when this prompt has played
        prompt = self.playback.start_prompt(text, barge_in=barge_in, prompt_id=prompt_id, question=question)
        prompt.on_finished = lambda p: self._drained.set()
        if timer is not None and self.endpointer.in_turn:
            # The caller went on after their turn was ended: the answer does not start over them. It
            # plays if their sound was no speech after all; a new turn of theirs replaces it.
            prompt.held_for_caller = True
            self.playback.pause()

        def first_frame(p: Prompt) -> None:
            self.transcript.append(("bot", text))  # what the caller heard, when it started
            if timer is not None:
                timer.first_frame(self.endpointer.now)
                self.turns.report(timer)

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
                self.progress.set()
        except Exception as exc:  # noqa: BLE001 - a prompt that cannot be synthesized is skipped
            log.warning("call %s: speech synthesis failed for %r: %s", self.call_id, text[:60], exc)
        self.playback.close_prompt(prompt)
        self.progress.set()
        return prompt

    async def _synthesize(self, text: str, prompt_id: str) -> AsyncIterator[bytes]:
        tts = self.tts
        if isinstance(tts, StreamingSynthesizer):
            async for chunk in tts.stream(text, self.sample_rate, prompt_id=prompt_id):
                yield chunk
            return
        parts = [text] if prompt_id else [p for p in _SENTENCE.split(text.strip()) if p]
        for part in parts or [text]:
            yield await tts.synthesize(part, self.sample_rate, prompt_id=prompt_id)

    async def wait_played(self) -> None:
        """Until the queued prompts have played (bounded by their length and ``PLAYBACK_GRACE``)."""
        deadline = time.monotonic() + self.playback.queued_seconds + PLAYBACK_GRACE
        while self.playback.talking and not self._closed:
            self._drained.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("call %s: playback did not drain, ending anyway", self.call_id)
                return
            try:
                await asyncio.wait_for(self._drained.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                continue

    async def apologize(self) -> None:
        """Something failed: drop what was queued and say so (best effort, bounded)."""
        self.playback.clear()
        try:
            await asyncio.wait_for(self.speak(APOLOGY, False, "apology", None), PLAYBACK_GRACE)
            await self.wait_played()
        except Exception as err:  # noqa: BLE001 - the apology is best effort
            log.warning("call %s: could not play the apology: %s", self.call_id, err)
