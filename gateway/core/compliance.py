"""Outbound that respects people: say who calls, and stop when asked.

- **Disclosure.** Every start the gateway itself makes (a call it placed and that was answered,
  the first message of a reminder SMS thread) begins with the ``say`` prompts of the journey
  ``outbound_start`` (``config/journeys/outbound_start.yaml``): the organisation (``compliance.organisation``, the
  ``{organisation}`` slot), that the caller is automated, and how to opt out (``{opt_out_key}``). The conversation
  then goes on where it stood.
- **Opt-out.** A customer opts out by voice or in a chat (the words below, or the NLU intent
  ``opt_out`` trained from ``config/journeys/opt_out.yaml``), by key on a call the gateway
  placed (``compliance.opt_out_key``, 9 by default, except while a digit string is being asked),
  or by SMS reply (STOP and the usual variants: the SMS channel sends :class:`OptOut`). Every
  number the session is known by goes on the do-not-call list (:mod:`gateway.context.dnc`),
  which the outbound policy checks before any call or SMS; the opt-out is noted in the
  conversation's log and in the audit log (``OptedOut``), and confirmed once: a repeated STOP
  gets no second message.

Which numbers: the phone on file when the session proved it (a call the gateway placed to it,
the gateway's own reminder thread, a verified customer), the SMS sender, and the caller ID of a
call. The last two are claims; honouring a claim errs on the side of calling less.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gateway.config import ComplianceSettings
from gateway.context.dnc import DoNotCall, number_key
from gateway.context.store import ConversationRecord, StoreError
from gateway.core.actions import Hangup, Say
from gateway.core.channels import Channel
from gateway.core.events import ChatMessage, DtmfPressed, Event, OptOut, UserSaid
from gateway.core.journey_steps import Prompt
from gateway.core.journeys import AskStep
from gateway.core.trust import Assurance
from gateway.core.turn import Turn

log = logging.getLogger(__name__)

OUTBOUND_START = "outbound_start"
"""The journey whose prompts every outbound start begins with (the disclosure)."""
OPTED_OUT = Prompt(voice="Understood. {organisation} will not call or text you again. Goodbye.",
                   text="You're unsubscribed: {organisation} will not call or text you again.")
"""The confirmation of an opt-out, in each channel's wording (a call ends after it)."""
OPT_OUT_INTENT = "opt_out"
OPT_OUT_CONFIDENCE = 0.6
"""The NLU must be this sure before a paraphrase ends the customer's calls (the phrases below
need no NLU at all)."""
MIN_NLU_WORDS = 2
"""A lone word ("stop", "cancel", "quit") is not taken as an opt-out by the NLU: on a call it
usually means "wait" or answers the question. The SMS keywords are the SMS channel's to read."""
OUTBOUND_SESSIONS_KEPT = 20
"""Sessions of a conversation remembered as calls the gateway placed (for the opt-out key)."""
DIGIT_STEPS = ("digits", "dob_or_pin")

STOP_PHRASES = re.compile(
    r"\b(?:stop (?:calling|ringing|texting|messaging|contacting|phoning)"
    r"|(?:do not|don'?t|never) (?:call|ring|text|message|contact|phone) (?:me|us|this number|here)"
    r"|unsubscribe|opt(?:\s|-)?(?:me\s)?out"
    r"|(?:remove|take) (?:me|my number|this number) (?:off|from) (?:your|the|this) (?:\w+ )?list"
    r"|do not call list|no more (?:calls|texts|messages))\b",
    re.IGNORECASE,
)
"""What always counts as an opt-out, in any channel, at any step."""


def asks_to_stop(text: str, nlu: Any) -> bool:
    """Whether ``text`` asks the gateway to stop calling or texting (phrases, else the NLU)."""
    if STOP_PHRASES.search(text or ""):
        return True
    if len((text or "").split()) < MIN_NLU_WORDS:
        return False
    result = nlu.classifier.classify(text)
    return result.intent == OPT_OUT_INTENT and result.confidence >= OPT_OUT_CONFIDENCE


def mark_outbound(record: ConversationRecord, session_id: str, settings: ComplianceSettings) -> None:
    """Remember that ``session_id`` is a call (or thread) the gateway started itself; the
    disclosure's slots (``organisation``, ``opt_out_key``)."""
    sessions = [s for s in record.state.outbound_sessions if s != session_id]
    record.state.outbound_sessions = (sessions + [session_id])[-OUTBOUND_SESSIONS_KEPT:]
    record.slots["organisation"] = settings.organisation
    record.slots["opt_out_key"] = settings.opt_out_key


def is_opt_out_key(turn: Turn, digit: str, step: AskStep | None, key: str) -> bool:
    """A key press that opts out: the configured key, on a call the gateway placed, while no
    digit string (an account number, a PIN, a date) or a choice it could select is asked."""
    if digit != key or not turn.channel.is_voice:
        return False
    if turn.party.session_id not in turn.record.state.outbound_sessions:
        return False
    if step is not None:
        if step.expect in DIGIT_STEPS or turn.record.state.pending_dtmf:
            return False
        if step.expect == "choice" and key.isdigit() and len(step.options) >= int(key):
            return False
    return True


def opt_out_route(turn: Turn, event: Event, nlu: Any, step: AskStep | None, key: str) -> str:
    """How ``event`` asks to opt out (``sms``, ``key``, ``voice``, ``chat``...), or '' when it does not."""
    if isinstance(event, OptOut):
        return event.via
    if isinstance(event, (UserSaid, ChatMessage)) and asks_to_stop(event.text, nlu):
        return (Channel.VOICE if isinstance(event, UserSaid) else turn.channel).value
    if isinstance(event, DtmfPressed) and is_opt_out_key(turn, event.digit, step, key):
        return "key"
    return ""


def _last4(number: str) -> str:
    return "…" + number_key(number)[-4:]


async def opt_out(turn: Turn, *, via: str, number: str, phone: str, dnc: DoNotCall | None, organisation: str) -> None:
    """Put the session's numbers on the do-not-call list, note and confirm it (see the module doc)."""
    record, party = turn.record, turn.party
    candidates = [number]
    if phone and party.level >= Assurance.PHONE:
        candidates.append(phone)
    if turn.channel.is_voice:
        candidates.append(record.caller_id)
    numbers = list(dict.fromkeys(n for n in candidates if number_key(n)))
    if dnc is None or not numbers:
        log.warning("conversation %s: opt-out by %s with no number to list", record.id, via)
        turn.note("OptOutFailed", via=via, reason="no_number" if dnc is not None else "no_list")
        turn.out.append(Say("I can't tell which number to stop contacting from here. Reply STOP from that "
                            "phone, or ask an agent, and we'll take care of it."))
        return
    added = 0
    try:
        for item in numbers:
            added += await dnc.add(item, source=via, conversation_id=record.id)
    except StoreError as exc:
        log.error("conversation %s: opt-out by %s not recorded: %s", record.id, via, exc)
        turn.note("OptOutFailed", via=via, reason="list_unavailable")
        turn.out.append(Say("I'm sorry, I couldn't record that just now. Please try again in a moment, "
                            "or ask for an agent."))
        return
    log.info("conversation %s: opted out by %s (%d number(s) listed, %d new)", record.id, via, len(numbers), added)
    turn.note("OptedOut", via=via, numbers=[_last4(n) for n in numbers], added=added)
    record.state.pending_dtmf = ""
    confirmation = OPTED_OUT.for_channel(turn.channel).format(organisation=organisation)
    if turn.channel.is_voice:
        turn.out.append(Say(confirmation, barge_in=False))
        turn.out.append(Hangup(reason="opted out"))
        record.status = "closed"
    elif added:  # confirmed once: a repeated STOP is not answered again
        turn.out.append(Say(confirmation))
