"""Who answered a call the gateway placed: listen first, then speak to a person or leave a message.

On an outbound call the session holds the journey's opening (from ``core.open``) while an
:class:`~gateway.voice.amd.AnsweringMachineDetector` listens to the first seconds of the answer:

- a person (or an unknown verdict, unless ``voice.amd.bias`` leans to machines): the held opening
  is spoken at once, and the verdict goes to the core for the record;
- a machine: the detector keeps listening until the beep has ended (or, without a beep, the
  greeting has: ``MESSAGE_AFTER_SILENCE_S`` of silence, at most ``MAX_MACHINE_WAIT_S``), then the
  core gets the verdict and answers with the journey's voicemail message and a hang-up.

A key pressed while listening is a person (machines do not press keys). Sans-IO: the session
feeds frames and the VAD's verdict, and carries out what :meth:`AnswerWatch.feed` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.core.events import AnsweringMachine
from gateway.voice.amd import AmdConfig, AmdVerdict, AnsweringMachineDetector, Verdict

FRAME_S = 0.02
MESSAGE_AFTER_SILENCE_S = 1.2
"""Without a beep, a greeting followed by this much silence is over: the message can start."""
MAX_MACHINE_WAIT_S = 20.0
"""The longest a machine's greeting is waited out after the verdict (some read long texts)."""


@dataclass(frozen=True)
class Answered:
    """What the session does now: tell the core ``event``, and speak ``opening`` (a person)."""

    event: AnsweringMachine
    opening: list[Any]


class AnswerWatch:
    """One outbound call's listening before the journey speaks (see the module docstring)."""

    def __init__(self, rate: int, config: AmdConfig, channel: str = "voice") -> None:
        self.config = config
        self.channel = channel
        self.detector = AnsweringMachineDetector(rate, config)
        self.opening: list[Any] = []
        self.verdict: AmdVerdict | None = None
        self.done = False
        self._quiet_s = 0.0
        self._waited_s = 0.0

    def hold(self, actions: list[Any]) -> None:
        """The journey's opening, spoken once a person is heard."""
        self.opening = list(actions)

    def feed(self, frame: bytes, speech: bool) -> Answered | None:
        """One 20 ms frame of the answer; what to do once it is decided (then None again)."""
        if self.done:
            return None
        verdict = self.detector.feed(frame, speech) or self.verdict
        if verdict is None:
            return None
        if self.verdict is None:
            self.verdict = verdict
            if not verdict.is_machine(self.config.bias):
                return self._finish(verdict.verdict.value, verdict.reason)
        # a machine: wait for the beep to end, or for its greeting to end without one
        self._waited_s += FRAME_S
        self._quiet_s = 0.0 if speech or self.detector.beeping else self._quiet_s + FRAME_S
        if self.detector.beep_ended:
            return self._finish(Verdict.MACHINE.value, "beep", beep=True)
        if (self._quiet_s >= MESSAGE_AFTER_SILENCE_S and not self.detector.beep_heard) \
                or self._waited_s >= MAX_MACHINE_WAIT_S:
            return self._finish(Verdict.MACHINE.value, self.verdict.reason + ", greeting over")
        return None

    def key_pressed(self) -> Answered | None:
        """A key while listening: machines do not press keys."""
        if self.done:
            return None
        if self.verdict is not None and self.verdict.is_machine(self.config.bias):
            return None  # a machine already; its greeting's tones are not a person
        return self._finish(Verdict.HUMAN.value, "key pressed")

    def _finish(self, verdict: str, reason: str, beep: bool = False) -> Answered:
        self.done = True
        person = verdict != Verdict.MACHINE.value
        now = round(self.detector.seconds, 2)
        decided = round(self.verdict.at_seconds, 2) if self.verdict is not None else now
        event = AnsweringMachine(verdict=verdict, seconds=min(decided, now), reason=reason, beep=beep,
                                 message_at=0.0 if person else now, channel=self.channel)
        opening, self.opening = (self.opening if person else []), []
        return Answered(event, opening)
