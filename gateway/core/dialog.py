"""The dialog engine: runs journeys over a conversation record, one event at a time.

It is channel-agnostic and stateless between calls: everything it knows lives in the
``ConversationRecord`` (journey, step, slots, verified facts, and ``state`` for retry counters,
the call stack of sub-journeys and the answered-steps history), so any gateway node can continue
a conversation from the store, on any channel.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Callable

from gateway.config import Settings
from gateway.context.store import ConversationRecord
from gateway.core.actions import Action, Ask, Hangup, OfferCall, Originate, Say
from gateway.core.events import (AgentConnected, CallAccepted, ChannelClosed, ChatMessage, DtmfPressed, Event,
                                 FormSubmitted, RecognitionFailed, Silence, UserSaid)
from gateway.core.interpret import interpret
from gateway.core.journeys import GLOBAL_INTENTS, JourneySet, Step, as_prompt
from gateway.core.nlu import Nlu
from gateway.core.steps import JourneyRunner
from gateway.integrations.crm import Crm

log = logging.getLogger(__name__)

GLOBAL_INTENT_CONFIDENCE = 0.5  # a global intent must be this sure to interrupt slot filling
SWITCH_INTENT_CONFIDENCE = 0.6  # a new topic must be this sure to leave the current journey
TERMINATORS = "#"
CLEAR_LEAD_FLOOR = 0.3   # below the threshold, a topic this likely that leads the rest
CLEAR_LEAD_RATIO = 3.0   # by this factor is still taken (one clear candidate, not a guess)


class DialogEngine(JourneyRunner):
    """Runs journeys. ``handle`` mutates the record and returns the actions for the channel."""

    def __init__(self, journeys: JourneySet, nlu: Nlu, crm: Crm, settings: Settings,
                 rasa: Any = None, today: Callable[[], date] = date.today):
        super().__init__(journeys, crm, settings, rasa=rasa, today=today)
        self.nlu = nlu

    # ----------------------------------------------------------------- entry points
    async def start(self, record: ConversationRecord, channel: str, *, resumed: bool,
                    journey: str = "", outbound: bool = False) -> list[Action]:
        """Begin (or resume on ``channel``) the conversation and return the opening actions."""
        out: list[Action] = []
        if resumed and record.step and record.status == "active":
            name = record.slots.get("customer_first_name", "")
            out.append(Say(f"Welcome back{', ' + name if name else ''}. Let's continue where we left off."
                           + (" You're already verified." if "identity" in record.verified else "")))
            step = self._current_step(record)
            if step is not None and step.ask is not None:
                out.append(self._ask(record, step, channel))
                return out
            await self._goto(record, f"journey:{self.settings.journeys.default}", channel, out)
            return out
        record.status = "active"
        record.state.setdefault("stack", [])
        if record.customer_id and "customer_name" not in record.slots:
            await self._load_customer(record)
        if outbound:
            record.state["outbound"] = True
        await self._enter(record, journey or self.settings.journeys.default, channel, out)
        return out

    async def handle(self, record: ConversationRecord, event: Event, channel: str) -> list[Action]:
        try:
            return await self._handle(record, event, channel)
        finally:
            record.state.pop("last_text", None)  # raw text is never persisted (the log holds it redacted)

    async def _handle(self, record: ConversationRecord, event: Event, channel: str) -> list[Action]:
        out: list[Action] = []
        if isinstance(event, (UserSaid, ChatMessage)):
            await self._answer(record, event.text, channel, out)
        elif isinstance(event, DtmfPressed):
            await self._dtmf(record, event.digit, channel, out)
        elif isinstance(event, (Silence, RecognitionFailed)):
            await self._retry(record, channel, out, "no_input" if isinstance(event, Silence) else "no_match")
        elif isinstance(event, CallAccepted):
            number = event.number or record.slots.get("customer_phone", "")
            if number:
                out.append(Say(f"Calling you now at the number ending in {number[-4:]}."))
                out.append(Originate(number=number, conversation_id=record.id, reason="chat-to-voice"))
            else:
                out.append(Say("I don't have a number to call. Please type the number you'd like us to call."))
        elif isinstance(event, FormSubmitted):
            record.slots[f"form_{event.purpose}"] = dict(event.fields)
            record.state.setdefault("forms", []).append(event.purpose)
            out.append(Say(f"Thanks, we've received your {event.purpose.replace('_', ' ')}."))
        elif isinstance(event, AgentConnected):
            record.status = "transferred"
            record.state["agent"] = event.agent_id
        elif isinstance(event, ChannelClosed):
            record.state["pending_dtmf"] = ""
        return out

    # ----------------------------------------------------------------- answers
    async def _dtmf(self, record: ConversationRecord, digit: str, channel: str, out: list[Action]) -> None:
        step = self._current_step(record)
        if step is None or step.ask is None:
            return
        if step.expect in ("yesno", "choice") or (step.expect == "open" and digit == "0"):
            if step.expect == "open":
                await self._global(record, "agent", channel, out)
            else:
                await self._fill(record, step, digit, channel, out, from_dtmf=True)
            return
        buffer = record.state.get("pending_dtmf", "")
        if digit in TERMINATORS:
            record.state["pending_dtmf"] = ""
            await self._fill(record, step, buffer, channel, out, from_dtmf=True)
            return
        buffer += digit
        hi = (step.digits or (0, 4 if step.expect == "dob_or_pin" else 32))[1]
        if step.expect == "dob_or_pin":
            hi = 4
        if len(buffer) >= hi:
            record.state["pending_dtmf"] = ""
            await self._fill(record, step, buffer, channel, out, from_dtmf=True)
        else:
            record.state["pending_dtmf"] = buffer

    async def _answer(self, record: ConversationRecord, text: str, channel: str, out: list[Action]) -> None:
        record.state["last_text"] = text
        step = self._current_step(record)
        if record.state.get("confirming"):
            await self._confirmation(record, text, channel, out)
            return
        if step is None or step.ask is None:
            await self._goto(record, f"journey:{self.settings.journeys.default}", channel, out)
            return
        parsed = self.nlu.parse(text)
        intent, confidence = self._journey_intent(parsed)
        if parsed.entities.get("frustration", 0.0) > record.state.get("frustration", 0.0):
            record.state["frustration"] = parsed.entities["frustration"]
        routing = step.expect == "open" and not step.slot
        if intent == "call_me" and channel != "voice" and confidence >= self.settings.nlu.threshold:
            await self._route(record, intent, channel, out)
            return
        if routing or step.expect == "open":
            if intent in GLOBAL_INTENTS and confidence >= GLOBAL_INTENT_CONFIDENCE:
                await self._global(record, intent, channel, out)
                return
            if routing:
                await self._route(record, intent, channel, out)
                return
            await self._fill(record, step, text, channel, out)
            return
        value = interpret(step, text, today=self.today())
        if value is not None:
            await self._fill_value(record, step, value, channel, out)
            return
        if intent in GLOBAL_INTENTS and confidence >= GLOBAL_INTENT_CONFIDENCE:
            await self._global(record, intent, channel, out)
        elif intent and confidence >= SWITCH_INTENT_CONFIDENCE and self.journeys.for_intent(intent) \
                and self.journeys.for_intent(intent).journey != record.journey:
            await self._route(record, intent, channel, out)
        else:
            await self._retry(record, channel, out, "no_match")

    def _journey_intent(self, parsed: Any) -> tuple[str | None, float]:
        """The intent, with the scores of intents that start the same journey added up
        (``order_status`` and ``delivery`` both lead to the order journey)."""
        if parsed.intent is not None:
            return parsed.intent, parsed.confidence
        totals: dict[str, float] = {}
        first: dict[str, str] = {}
        for name, score in parsed.ranking:
            journey = self.journeys.for_intent(name)
            key = journey.journey if journey else name
            totals[key] = totals.get(key, 0.0) + score
            first.setdefault(key, name)
        if not totals:
            return None, 0.0
        ordered = sorted(totals.values(), reverse=True)
        key = max(totals, key=totals.__getitem__)
        runner_up = ordered[1] if len(ordered) > 1 else 0.0
        clear_lead = totals[key] >= CLEAR_LEAD_FLOOR and totals[key] >= CLEAR_LEAD_RATIO * runner_up
        if totals[key] >= self.settings.nlu.threshold or clear_lead:
            return first[key], totals[key]
        return None, parsed.confidence

    async def _route(self, record: ConversationRecord, intent: str | None, channel: str, out: list[Action]) -> None:
        if intent == "call_me" and channel not in ("voice",):
            phone = record.slots.get("customer_phone", "")
            text = (f"Would you like us to call you now at the number ending in {phone[-4:]}?" if phone
                    else "Would you like us to call you? Tell me the number to call.")
            out.append(OfferCall(text=text, number=phone))
            return
        if intent in GLOBAL_INTENTS:
            await self._global(record, intent, channel, out)
            return
        journey = self.journeys.for_intent(intent) if intent else None
        if journey is None:
            await self._retry(record, channel, out, "no_match")
            return
        record.state["intent"] = intent
        record.state["stack"] = []
        await self._enter(record, journey.journey, channel, out)

    async def _fill(self, record: ConversationRecord, step: Step, text: str, channel: str, out: list[Action],
                    from_dtmf: bool = False) -> None:
        value = interpret(step, text, today=self.today(), from_dtmf=from_dtmf)
        if value is None:
            await self._retry(record, channel, out, "no_match")
        else:
            await self._fill_value(record, step, value, channel, out)

    async def _fill_value(self, record: ConversationRecord, step: Step, value: Any, channel: str,
                          out: list[Action]) -> None:
        if step.slot:
            record.slots[step.slot] = value
        record.state["retries"] = {}
        record.state.setdefault("history", []).append([record.journey, step.id])
        if step.confirm is not None:
            record.state["confirming"] = step.id
            out.append(Ask(self._render(record, as_prompt(step.confirm), channel),
                           expect=self._expect(Step(id="confirm", ask="?", expect="yesno", slot="c"))))
            return
        await self._goto(record, step.next or self._after(record, step), channel, out)

    async def _confirmation(self, record: ConversationRecord, text: str, channel: str, out: list[Action]) -> None:
        step = self._current_step(record)
        answer = interpret(Step(id="confirm", ask="?", expect="yesno", slot="c"), text, today=self.today())
        if answer is None or step is None:
            await self._retry(record, channel, out, "no_match")
            return
        record.state.pop("confirming", None)
        if answer == "yes":
            await self._goto(record, step.next or self._after(record, step), channel, out)
        else:
            if step.slot:
                record.slots.pop(step.slot, None)
            out.append(self._ask(record, step, channel))

    # ----------------------------------------------------------------- global intents and retries
    async def _global(self, record: ConversationRecord, intent: str, channel: str, out: list[Action]) -> None:
        step = self._current_step(record)
        if intent == "agent":
            await self._transfer(record, None, channel, out, reason="customer asked for an agent")
        elif intent == "repeat":
            if step is not None and step.ask is not None:
                out.append(self._ask(record, step, channel))
        elif intent == "help":
            help_text = as_prompt(step.help) if step is not None and step.help is not None else None
            out.append(Say(self._render(record, help_text, channel) if help_text else
                           "You can answer the question, say repeat, go back, or ask for an agent at any time."))
            if step is not None and step.ask is not None:
                out.append(self._ask(record, step, channel))
        elif intent == "go_back":
            history = record.state.get("history", [])
            if history:
                journey, step_id = history.pop()
                back = self.journeys.journeys[journey].step(step_id)
                if back.slot:
                    record.slots.pop(back.slot, None)
                record.journey, record.step = journey, step_id
                out.append(Say("Sure, let's go back."))
                out.append(self._ask(record, back, channel))
            else:
                out.append(Say("We're at the beginning already."))
                if step is not None and step.ask is not None:
                    out.append(self._ask(record, step, channel))
        elif intent == "goodbye":
            out.append(Say("Thank you for contacting us. Goodbye!"))
            out.append(Hangup(reason="caller said goodbye"))
            record.status = "closed"

    async def _retry(self, record: ConversationRecord, channel: str, out: list[Action], kind: str) -> None:
        step = self._current_step(record)
        if step is None or step.ask is None:
            return
        retries = record.state.setdefault("retries", {})
        retries[kind] = retries.get(kind, 0) + 1
        limit = self.settings.journeys.max_no_input if kind == "no_input" else self.settings.journeys.max_no_match
        if retries[kind] >= limit:
            out.append(Say("I'm sorry, I'm having trouble understanding." if kind == "no_match"
                           else "I'm sorry, I can't hear you."))
            await self._transfer(record, None, channel, out, reason=f"repeated {kind.replace('_', '-')}")
            return
        custom = as_prompt(getattr(step, kind))
        if custom is not None:
            out.append(Ask(self._render(record, custom, channel), expect=self._expect(step), prompt_id=f"{step.id}.{kind}"))
            return
        lead = "Sorry, I didn't get that." if kind == "no_match" else "Are you still there?"
        out.append(Say(lead))
        out.append(self._ask(record, step, channel))
