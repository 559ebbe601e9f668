"""Running journey steps: entering journeys and sub-journeys, asking, lookups, transfers, follow-ups.

``JourneyRunner`` moves a conversation record through the steps of its journeys until a step
waits for the customer (an ask), ends the conversation or hands it to an agent. The dialog
engine (``gateway.core.dialog``) builds on it to interpret each turn.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Any, Callable

from gateway.config import Settings
from gateway.context.store import ConversationRecord
from gateway.core.actions import Action, Ask, Expect, Hangup, OfferCall, Say, SendFollowUp, Transfer
from gateway.core.interpret import expect_for
from gateway.core.journeys import Journey, JourneySet, Prompt, Step, as_prompt
from gateway.core.lookups import LOOKUPS, LookupContext, Outcome, customer_slots, run_lookup
from gateway.integrations.crm import Crm

log = logging.getLogger(__name__)

MAX_STEPS_PER_TURN = 60        # a journey that loops without asking anything is cut here


class _Slots(dict):
    def __missing__(self, key: str) -> str:
        return ""


class JourneyRunner:
    """Moves a record through journey steps; the record holds all state, the runner none."""

    def __init__(self, journeys: JourneySet, crm: Crm, settings: Settings, rasa: Any = None,
                 today: Callable[[], date] = date.today):
        self.journeys = journeys
        self.crm = crm
        self.settings = settings
        self.rasa = rasa
        self.today = today

    # ----------------------------------------------------------------- running steps
    async def _enter(self, record: ConversationRecord, name: str, channel: str, out: list[Action]) -> None:
        journey = self.journeys.journeys[name]
        skip_check = record.state.get("outbound") and name == record.state.get("outbound_journey", name)
        if journey.requires and journey.requires not in record.verified and not skip_check:
            record.state.setdefault("stack", []).append([name, journey.steps[0].id])
            name = f"verify_{journey.requires}"
            journey = self.journeys.journeys[name]
        if record.state.get("outbound") and "outbound_journey" not in record.state:
            record.state["outbound_journey"] = name
        record.journey = journey.journey
        await self._run_from(record, journey.steps[0].id, channel, out)

    async def _goto(self, record: ConversationRecord, target: str | None, channel: str, out: list[Action]) -> None:
        if target and target.startswith("journey:"):
            record.state["stack"] = []
            await self._enter(record, target[8:], channel, out)
        elif target and target != "END":
            await self._run_from(record, target, channel, out)
        else:
            await self._return(record, channel, out)

    async def _return(self, record: ConversationRecord, channel: str, out: list[Action]) -> None:
        stack = record.state.setdefault("stack", [])
        if stack:
            journey, step_id = stack.pop()
            record.journey = journey
            await self._goto(record, step_id or "END", channel, out)
        else:
            record.journey = self.settings.journeys.default
            default = self.journeys.journeys[record.journey]
            routing = [s for s in default.steps if s.ask is not None and s.expect == "open" and not s.slot]
            await self._run_from(record, (routing or default.steps)[-1].id, channel, out)

    def _after(self, record: ConversationRecord, step: Step) -> str:
        return self.journeys.journeys[record.journey].after(step.id) or "END"

    async def _run_from(self, record: ConversationRecord, step_id: str, channel: str, out: list[Action]) -> None:
        journey = self.journeys.journeys[record.journey]
        for _ in range(MAX_STEPS_PER_TURN):
            step = journey.step(step_id)
            record.step = step.id
            target = await self._run_step(record, journey, step, channel, out)
            if target is None:
                return
            if target == "END" or target.startswith("journey:"):
                await self._goto(record, target, channel, out)
                return
            step_id = target
        log.error("journey %s loops without asking anything; escalating", journey.journey)
        await self._transfer(record, None, channel, out, reason="journey error")

    async def _run_step(self, record: ConversationRecord, journey: Journey, step: Step, channel: str,
                        out: list[Action]) -> str | None:
        """Run one step; returns the next step id, or None when waiting for the customer."""
        after = step.next or journey.after(step.id) or "END"
        if step.skip_if_verified and step.skip_if_verified in record.verified:
            return "END"
        kind = step.kind
        if kind == "ask":
            if step.slot and step.skip_if_slot and step.slot in record.slots:
                return after
            out.append(self._ask(record, step, channel))
            return None
        if kind == "say":
            out.append(Say(self._render(record, as_prompt(step.say), channel), prompt_id=step.id))
            return after
        if kind == "run":
            outcome = await self._lookup(record, step, channel, out)
            self._apply(record, outcome, journey)
            return step.outcomes.get(outcome.name) or step.outcomes.get("default") or after
        if kind == "branch":
            value = str(record.slots.get(step.branch or "", "")).lower()
            return step.cases.get(value) or step.cases.get("default") or after
        if kind == "transfer":
            await self._transfer(record, step, channel, out, reason=step.reason)
            return None
        if kind == "follow_up":
            self._follow_up(record, step, channel, out)
            return after
        if kind == "offer_call":
            if channel != "voice":
                out.append(OfferCall(text=self._render(record, as_prompt(step.offer_call), channel),
                                     number=record.slots.get("customer_phone", "")))
            return after
        if kind == "call":
            record.state.setdefault("stack", []).append([journey.journey, step.next or journey.after(step.id)])
            await self._enter(record, step.call or "", channel, out)
            return None
        if kind == "end":
            out.append(Say(self._render(record, as_prompt(step.end), channel), barge_in=False, prompt_id=step.id))
            out.append(Hangup(reason="completed"))
            record.status = "closed"
            return None
        raise ValueError(f"step {step.id!r} has no kind")

    async def _lookup(self, record: ConversationRecord, step: Step, channel: str, out: list[Action]) -> Outcome:
        name = step.run or ""
        if name.startswith("rasa:"):
            return await self._rasa(record, name[5:], out)
        ctx = LookupContext(crm=self.crm, slots=record.slots, state=record.state, customer_id=record.customer_id,
                            caller_id=record.caller_id, channel=channel, args=dict(step.args), today=self.today())
        return await run_lookup(name, ctx)

    async def _rasa(self, record: ConversationRecord, action: str, out: list[Action]) -> Outcome:
        if self.rasa is None:
            log.warning("journey step runs rasa:%s but no Rasa action server is configured", action)
            return Outcome("error")
        try:
            result = await self.rasa.run(action, sender_id=record.id, slots=dict(record.slots),
                                         latest_message={"text": record.state.get("last_text", "")})
        except Exception as exc:  # the Rasa client raises RasaError; anything else is the same failure
            log.warning("rasa action %s failed: %s", action, exc)
            return Outcome("error")
        slots = {e["name"]: e.get("value") for e in result.events if e.get("event") == "slot" and "name" in e}
        for response in result.responses:
            if response.get("text"):
                out.append(Say(response["text"]))
        return Outcome(str(slots.pop("outcome", None) or "done"), slots)

    def _apply(self, record: ConversationRecord, outcome: Outcome, journey: Journey) -> None:
        record.slots.update(outcome.slots)
        for name in outcome.clear:
            record.slots.pop(name, None)
        now = time.time()
        for fact in outcome.verified:
            record.verified[fact] = now
        if outcome.customer_id:
            record.customer_id = outcome.customer_id
        for step in journey.steps:
            if step.sensitive and step.slot:
                record.slots.pop(step.slot, None)

    async def _transfer(self, record: ConversationRecord, step: Step | None, channel: str, out: list[Action],
                        reason: str) -> None:
        journey = self.journeys.journeys.get(record.journey)
        queue = (step.transfer if step else "") or (journey.queue if journey else "") or self.settings.journeys.agent_queue
        skills = (step.skills if step else ()) or (journey.skills if journey else ())
        if step is not None and step.prompt is not None:
            out.append(Say(self._render(record, as_prompt(step.prompt), channel), barge_in=False))
        elif step is None:
            out.append(Say("Let me connect you with an agent. They'll see everything we've discussed.", barge_in=False))
        out.append(Transfer(queue=queue, skills=tuple(skills), language=record.slots.get("customer_language", "en"),
                            reason=reason, conversation_id=record.id))
        record.status = "transferred"
        record.state["transfer"] = {"queue": queue, "reason": reason, "at": time.time()}

    def _follow_up(self, record: ConversationRecord, step: Step, channel: str, out: list[Action]) -> None:
        target = "chat" if channel in ("chat", "web") else (step.follow_up or "sms")
        phone = record.slots.get("customer_phone", "")
        if target == "sms" and not phone:
            log.info("follow-up %s skipped: no phone number on file", step.template)
            return
        text = self._render(record, Prompt(text=step.message), channel) if step.message else ""
        out.append(SendFollowUp(channel=target, template=step.template or step.id, text=text, to=phone,
                                link_purpose=step.link, conversation_id=record.id))
        if step.prompt is not None:
            out.append(Say(self._render(record, as_prompt(step.prompt), channel)))

    # ----------------------------------------------------------------- helpers
    async def _load_customer(self, record: ConversationRecord) -> None:
        try:
            customer = await self.crm.get_customer(record.customer_id)
        except Exception as exc:  # CrmTimeout/CrmError: the journey identifies the customer itself
            log.warning("customer %s could not be loaded: %s", record.customer_id, exc)
            return
        if customer is not None:
            record.slots.update(customer_slots(customer))

    def _current_step(self, record: ConversationRecord) -> Step | None:
        journey = self.journeys.journeys.get(record.journey)
        if journey is None or not record.step:
            return None
        try:
            return journey.step(record.step)
        except KeyError:
            return None

    def _expect(self, step: Step) -> Expect:
        return expect_for(step, self.settings.voice.endpoint.no_input_seconds)

    def _ask(self, record: ConversationRecord, step: Step, channel: str) -> Ask:
        return Ask(self._render(record, as_prompt(step.ask), channel), expect=self._expect(step), prompt_id=step.id)

    def _render(self, record: ConversationRecord, prompt: Prompt | None, channel: str) -> str:
        if prompt is None:
            return ""
        text = prompt.for_channel(channel)
        try:
            return text.format_map(_Slots(record.slots))
        except (ValueError, IndexError) as exc:
            log.warning("prompt %r cannot be rendered: %s", text, exc)
            return text

    @staticmethod
    def known_lookups() -> set[str]:
        return set(LOOKUPS)

