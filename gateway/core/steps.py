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
from gateway.core.actions import Ask, Expect, Hangup, OfferCall, Say, SendFollowUp, Transfer
from gateway.core.channels import Channel
from gateway.core.dialog_state import Transferred
from gateway.core.handoff import Handoff
from gateway.core.interpret import expect_for
from gateway.core.journeys import Journey, JourneySet, Prompt, Step, as_prompt
from gateway.core.lookups import LOOKUPS, LookupContext, Outcome, customer_slots, run_lookup
from gateway.core.trust import REQUIREMENTS, Assurance
from gateway.core.turn import Turn
from gateway.core.verification import VERIFICATION_LOOKUPS, TrustServices
from gateway.integrations.crm import Crm

log = logging.getLogger(__name__)

MAX_STEPS_PER_TURN = 60        # a journey that loops without asking anything is cut here
CHANNEL_BRANCH = "channel"
"""``branch: channel`` branches on the channel the customer is on now: voice, chat or sms
(:attr:`Channel.branch_value <gateway.core.channels.Channel.branch_value>`)."""


class _Slots(dict):
    def __missing__(self, key: str) -> str:
        return ""


class JourneyRunner:
    """Moves a record through journey steps; the record holds all state, the runner none."""

    def __init__(self, journeys: JourneySet, crm: Crm, settings: Settings, services: TrustServices,
                 rasa: Any = None, today: Callable[[], date] = date.today):
        self.journeys = journeys
        self.crm = crm
        self.settings = settings
        self.services = services
        self.rasa = rasa
        self.today = today

    # ----------------------------------------------------------------- running steps
    def required_level(self, record: ConversationRecord) -> Assurance:
        """What the party must hold to continue where the conversation stands: the strictest
        ``requires:`` of the current journey and the journeys waiting on the call stack."""
        names = [record.journey] + [frame.journey for frame in record.state.stack]
        levels = [REQUIREMENTS.get(self.journeys.journeys[n].requires or "", Assurance.NONE)
                  for n in names if n in self.journeys.journeys]
        return max(levels, default=Assurance.NONE)

    async def _enter(self, turn: Turn, name: str) -> None:
        record = turn.record
        journey = self.journeys.journeys[name]
        if journey.requires and not turn.party.holds(journey.requires):
            record.state.push(name, journey.steps[0].id)
            name = f"verify_{journey.requires}"
            journey = self.journeys.journeys[name]
        record.journey = journey.journey
        await self._run_from(turn, journey.steps[0].id)

    async def _goto(self, turn: Turn, target: str | None) -> None:
        if target and target.startswith("journey:"):
            turn.record.state.stack = []
            await self._enter(turn, target[8:])
        elif target and target != "END":
            await self._run_from(turn, target)
        else:
            await self._return(turn)

    async def _return(self, turn: Turn) -> None:
        record = turn.record
        stack = record.state.stack
        if stack:
            frame = stack.pop()
            journey, step_id = frame.journey, frame.step
            detour = record.state.step_up
            if detour is not None and detour.frame == frame:
                record.state.step_up = None
            required = self.journeys.journeys[journey].requires if journey in self.journeys.journeys else None
            if required and not turn.party.holds(required):
                # back into a journey this party has not proven enough for (a failed or
                # abandoned check): never continue it unverified
                stack.append(frame)
                await self._enter(turn, f"verify_{required}")
                return
            record.journey = journey
            await self._goto(turn, step_id or "END")
        else:
            record.journey = self.settings.journeys.default
            default = self.journeys.journeys[record.journey]
            routing = [s for s in default.steps if s.ask is not None and s.expect == "open" and not s.slot]
            await self._run_from(turn, (routing or default.steps)[-1].id)

    def _after(self, record: ConversationRecord, step: Step) -> str:
        return self.journeys.journeys[record.journey].after(step.id) or "END"

    async def _run_from(self, turn: Turn, step_id: str) -> None:
        record = turn.record
        journey = self.journeys.journeys[record.journey]
        for _ in range(MAX_STEPS_PER_TURN):
            step = journey.step(step_id)
            record.step = step.id
            target = await self._run_step(turn, journey, step)
            if target is None:
                return
            if target == "END" or target.startswith("journey:"):
                await self._goto(turn, target)
                return
            step_id = target
        log.error("journey %s loops without asking anything; escalating", journey.journey)
        await self._transfer(turn, None, reason="journey error")

    async def _run_step(self, turn: Turn, journey: Journey, step: Step) -> str | None:
        """Run one step; returns the next step id, or None when waiting for the customer."""
        record, channel, out = turn.record, turn.channel, turn.out
        after = step.next or journey.after(step.id) or "END"
        if step.skip_if_verified and turn.party.holds(step.skip_if_verified):
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
            outcome = await self._lookup(turn, step)
            self._apply(turn, outcome, journey)
            return step.outcomes.get(outcome.name) or step.outcomes.get("default") or after
        if kind == "branch":
            if step.branch == CHANNEL_BRANCH:
                value = channel.branch_value
            else:
                value = str(record.slots.get(step.branch or "", "")).lower()
            return step.cases.get(value) or step.cases.get("default") or after
        if kind == "transfer":
            await self._transfer(turn, step, reason=step.reason)
            return None
        if kind == "follow_up":
            await self._follow_up(turn, step)
            return after
        if kind == "offer_call":
            phone = record.slots.get("customer_phone", "")
            if not channel.is_voice and phone:
                turn.ledger.offer_call(turn.party.session_id, phone, turn.now, self.settings.trust.offer_minutes * 60)
                out.append(OfferCall(text=self._render(record, as_prompt(step.offer_call), channel), number=phone))
            return after
        if kind == "call":
            record.state.push(journey.journey, step.next or journey.after(step.id))
            await self._enter(turn, step.call or "")
            return None
        if kind == "end":
            out.append(Say(self._render(record, as_prompt(step.end), channel), barge_in=False, prompt_id=step.id))
            out.append(Hangup(reason="completed"))
            record.status = "closed"
            return None
        raise ValueError(f"step {step.id!r} has no kind")

    async def _lookup(self, turn: Turn, step: Step) -> Outcome:
        record = turn.record
        name = step.run or ""
        if name.startswith("rasa:"):
            return await self._rasa(record, name[5:], turn.out, turn.text)
        ctx = LookupContext(crm=self.crm, slots=record.slots, state=record.state, customer_id=record.customer_id,
                            caller_id=record.caller_id, channel=turn.channel, args=dict(step.args),
                            today=self.today(), turn=turn, services=self.services)
        return await run_lookup(name, ctx)

    async def _rasa(self, record: ConversationRecord, action: str, out: list[Any], text: str) -> Outcome:
        if self.rasa is None:
            log.warning("journey step runs rasa:%s but no Rasa action server is configured", action)
            return Outcome("error")
        try:
            result = await self.rasa.run(action, sender_id=record.id, slots=dict(record.slots),
                                         latest_message={"text": text})
        except Exception as exc:  # the Rasa client raises RasaError; anything else is the same failure
            log.warning("rasa action %s failed: %s", action, exc)
            return Outcome("error")
        slots = {e["name"]: e.get("value") for e in result.events if e.get("event") == "slot" and "name" in e}
        for response in result.responses:
            if response.get("text"):
                out.append(Say(response["text"]))
        return Outcome(str(slots.pop("outcome", None) or "done"), slots)

    def _apply(self, turn: Turn, outcome: Outcome, journey: Journey) -> None:
        record = turn.record
        record.slots.update(outcome.slots)
        for name in outcome.clear:
            record.slots.pop(name, None)
        if outcome.customer_id:
            record.customer_id = outcome.customer_id
        for fact in outcome.verified:
            level = REQUIREMENTS.get(fact)
            if level is not None:
                turn.party = turn.ledger.grant(turn.party, level, outcome.method or "knowledge", turn.now,
                                               self.settings.trust.verified_minutes * 60)
        turn.out.extend(outcome.actions)
        for step in journey.steps:
            if step.sensitive and step.slot:
                record.slots.pop(step.slot, None)

    async def _transfer(self, turn: Turn, step: Step | None, reason: str, *, queue: str = "", agent: str = "") -> None:
        """Hand the conversation to people: ``queue`` (else the step's, the journey's, the
        default), or ``agent`` by name (a supervisor's take-over). A digital conversation then
        waits in the gateway's queue (:class:`~gateway.core.handoff.Handoff`); a call waits in the PBX's."""
        record, channel, out = turn.record, turn.channel, turn.out
        journey = self.journeys.journeys.get(record.journey)
        queue = queue or (step.transfer if step else "") or (journey.queue if journey else "") \
            or self.settings.journeys.agent_queue
        skills = (step.skills if step else ()) or (journey.skills if journey else ())
        if step is not None and step.prompt is not None:
            out.append(Say(self._render(record, as_prompt(step.prompt), channel), barge_in=False))
        elif step is None:
            out.append(Say("Let me connect you with an agent. They'll see everything we've discussed.", barge_in=False))
        out.append(Transfer(queue=queue, skills=tuple(skills), language=record.slots.get("customer_language", "en"),
                            reason=reason, conversation_id=record.id, agent=agent))
        record.status = "transferred"
        record.state.transfer = Transferred(queue, reason, time.time(), channel)
        if channel.is_typed:  # a call waits in the PBX's queue; an SMS thread with the bot
            Handoff.of(record).wait(channel, turn.now).save(record)
        turn.ledger.touch(turn.party.session_id)

    async def _follow_up(self, turn: Turn, step: Step) -> None:
        """A follow-up goes where the journey says: ``sms`` to the phone on file only (never into
        the chat, never to a number the party gave), ``chat`` into the conversation's chat."""
        record, channel, out = turn.record, turn.channel, turn.out
        text = self._render(record, Prompt(text=step.message), channel) if step.message else ""
        if step.follow_up == Channel.CHAT:
            out.append(SendFollowUp(channel=Channel.CHAT, template=step.template or step.id, text=text,
                                    link_purpose=step.link, conversation_id=record.id))
        else:
            phone = await self.phone_on_file(record)
            if not phone:
                log.info("conversation %s: follow-up %s skipped: no phone number on file", record.id, step.template)
                out.append(Say("I don't have a phone number on file to send that to."))
                return
            refusal = await self.services.policy.authorize("sms", record.id, phone)
            if refusal is not None:
                turn.note("FollowUpRefused", template=step.template or step.id, reason=refusal.reason)
                out.append(Say(refusal.text))
                return
            out.append(SendFollowUp(channel=Channel.SMS, template=step.template or step.id, text=text, to=phone,
                                    link_purpose=step.link, conversation_id=record.id))
        if step.prompt is not None:
            out.append(Say(self._render(record, as_prompt(step.prompt), channel)))

    async def phone_on_file(self, record: ConversationRecord) -> str:
        """The customer's phone number as the CRM has it now ('' when unknown or unreachable)."""
        if not record.customer_id:
            return ""
        try:
            customer = await self.crm.get_customer(record.customer_id)
        except Exception as exc:  # CrmTimeout/CrmError: nothing is sent to a number not confirmed on file
            log.warning("conversation %s: phone on file unavailable: %s", record.id, exc)
            return ""
        return customer.phone if customer is not None else ""

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

    def _ask(self, record: ConversationRecord, step: Step, channel: Channel) -> Ask:
        return Ask(self._render(record, as_prompt(step.ask), channel), expect=self._expect(step), prompt_id=step.id)

    def _render(self, record: ConversationRecord, prompt: Prompt | None, channel: Channel) -> str:
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
        return set(LOOKUPS) | set(VERIFICATION_LOOKUPS)

