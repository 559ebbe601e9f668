"""What the core does when a call it placed reaches an answering machine.

The voice channel runs answering-machine detection on every call the gateway places
(:mod:`gateway.voice.amd`) and tells the core with :class:`~gateway.core.events.AnsweringMachine`.
For a person (or an unknown verdict acted on as one) nothing changes: the journey's opening,
held while the detector listened, is spoken. For a machine, once its beep has ended, the core
answers with the journey's ``voicemail`` message and hangs up. The message names the
organisation and, at most, the customer's first name: whatever else the journey knows (an
appointment, a bill, a case number) stays off a recording anyone in the house can play.
"""

from __future__ import annotations

import logging

from gateway.core.actions import Hangup, Say
from gateway.core.events import AnsweringMachine
from gateway.core.channels import Channel
from gateway.core.journeys import JourneySet, Prompt, as_prompt
from gateway.core.turn import Turn

log = logging.getLogger(__name__)

SAFE_ON_VOICEMAIL = ("customer_first_name",)
"""Slots a voicemail message may say (besides the organisation)."""
DEFAULT_MESSAGE = ("Hello{name}, this is {organisation} with an automated message. Please call us back at your "
                   "convenience. Thank you, goodbye.")


class _Safe(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return ""


def voicemail_text(prompt: Prompt | None, slots: dict[str, object], organisation: str) -> str:
    """The message, with only the slots safe on a voicemail filled in."""
    safe = _Safe({k: str(slots[k]) for k in SAFE_ON_VOICEMAIL if slots.get(k)})
    safe["organisation"] = organisation
    if prompt is None:
        first = safe.get("customer_first_name", "")
        return DEFAULT_MESSAGE.format(name=f" {first}" if first else "", organisation=organisation)
    try:
        return prompt.for_channel(Channel.VOICE).format_map(safe)
    except (ValueError, IndexError) as exc:
        log.warning("voicemail prompt cannot be rendered: %s", exc)
        return DEFAULT_MESSAGE.format(name="", organisation=organisation)


def on_answering_machine(turn: Turn, event: AnsweringMachine, journeys: JourneySet, organisation: str) -> None:
    """Leave the journey's message on a machine and hang up; nothing for a person."""
    record = turn.record
    if event.verdict != "machine" or not turn.channel.is_voice:
        log.info("conversation %s: the call was answered (%s, decided after %.1f s)", record.id, event.verdict,
                 event.seconds)
        return
    journey = journeys.journeys.get(record.journey) or journeys.journeys.get(record.state.pending_journey)
    text = voicemail_text(as_prompt(journey.voicemail) if journey else None, record.slots, organisation)
    turn.out.append(Say(text, barge_in=False, prompt_id="voicemail"))
    turn.out.append(Hangup(reason="voicemail"))
    log.info("conversation %s: answering machine (%s), message left", record.id, event.reason or "detected")
