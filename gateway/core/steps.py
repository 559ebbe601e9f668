"""Running journeys: entering journeys and sub-journeys, going from step to step, transfers.

``JourneyRunner`` moves a conversation record through the steps of its journeys until a step
waits for the customer (an ask), ends the conversation or hands it to an agent. Each step is run
by the runner of its kind (:mod:`gateway.core.step_runners`); what runners share (rendering a
prompt, asking, transferring, the phone on file) is public here. The dialog engine
(``gateway.core.dialog``) builds on it to interpret each turn.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Any, Callable

from gateway.config import Settings
from gateway.context.store import ConversationRecord
from gateway.core.actions import Ask, Expect, Say, Transfer
from gateway.core.channels import Channel
from gateway.core.dialog_state import PendingTransfer, Transferred
from gateway.core.handoff import Handoff
from gateway.core.interpret import expect_for
from gateway.core.journeys import AskStep, Journey, JourneySet, Prompt, StepBase, TransferStep, as_prompt
from gateway.core.lookups import LOOKUPS, customer_slots
from gateway.core.step_runners import STEP_RUNNERS
from gateway.core.trust import REQUIREMENTS, Assurance
from gateway.core.queue_wait import QueueProbe, estimate
from gateway.core.turn import Turn
from gateway.core.verification import VERIFICATION_LOOKUPS, TrustServices
from gateway.integrations.crm import Crm

log = logging.getLogger(__name__)

MAX_STEPS_PER_TURN = 60        # a journey that loops without asking anything is cut here
LONG_WAIT = "long_wait"
"""The journey that offers a callback, a text or the wait when the queue is long."""
PENDING_QUEUE = "pending"
"""``transfer: pending`` goes to the queue a long-wait offer was made for."""


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
        self.queue_probes: list[QueueProbe] = []
        """How long the queues are (registered by channels: AMI, the agent desktop)."""

    # ----------------------------------------------------------------- running steps
    def required_level(self, record: ConversationRecord) -> Assurance:
        """What the party must hold to continue where the conversation stands: the strictest
        ``requires:`` of the current journey and the journeys waiting on the call stack."""
        names = [record.journey] + [frame.journey for frame in record.state.stack]
        levels = [REQUIREMENTS.get(self.journeys.journeys[n].requires or "", Assurance.NONE)
                  for n in names if n in self.journeys.journeys]
        return max(levels, default=Assurance.NONE)

    async def enter(self, turn: Turn, name: str) -> None:
        """Start journey ``name`` (its check first, when the party has not proven what it requires)."""
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
            await self.enter(turn, target[8:])
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
                await self.enter(turn, f"verify_{required}")
                return
            record.journey = journey
            await self._goto(turn, step_id or "END")
        else:
            record.journey = self.settings.journeys.default
            default = self.journeys.journeys[record.journey]
            routing = [s for s in default.steps if isinstance(s, AskStep) and s.routes]
            await self._run_from(turn, (routing or default.steps)[-1].id)

    def _after(self, record: ConversationRecord, step: StepBase) -> str:
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
        await self.transfer(turn, None, reason="journey error")

    async def _run_step(self, turn: Turn, journey: Journey, step: StepBase) -> str | None:
        """Run one step with the runner of its kind; the next step id, or None when waiting for the customer."""
        if step.skip_if_verified and turn.party.holds(step.skip_if_verified):
            return "END"
        return await STEP_RUNNERS[type(step)](self, turn, journey, step)

    async def transfer(self, turn: Turn, step: TransferStep | None, reason: str, *, queue: str = "",
                       agent: str = "") -> None:
        """Hand the conversation to people: ``queue`` (else the step's, the journey's, the
        default), or ``agent`` by name (a supervisor's take-over). A digital conversation then
        waits in the gateway's queue (:class:`~gateway.core.handoff.Handoff`); a call waits in the PBX's."""
        record, channel, out = turn.record, turn.channel, turn.out
        journey = self.journeys.journeys.get(record.journey)
        pending = record.state.pending_transfer if step is not None and step.transfer == PENDING_QUEUE else None
        skills: tuple[str, ...]
        if pending is not None:  # the customer chose to wait after all (long_wait): the transfer put off
            record.state.pending_transfer = None
            queue, skills, reason = pending.queue, pending.skills, pending.reason or reason
        else:
            queue = queue or (step.transfer if step and step.transfer != PENDING_QUEUE else "") \
                or (journey.queue if journey else "") or self.settings.journeys.agent_queue
            skills = tuple((step.skills if step else ()) or (journey.skills if journey else ()))
            if not agent and await self._offer_instead(turn, PendingTransfer(queue, skills, reason)):
                return
        queue = queue or self.settings.journeys.agent_queue
        if step is not None and step.prompt is not None:
            out.append(Say(self.render(record, as_prompt(step.prompt), channel), barge_in=False))
        elif step is None:
            out.append(Say("Let me connect you with an agent. They'll see everything we've discussed.", barge_in=False))
        out.append(Transfer(queue=queue, skills=tuple(skills), language=record.slots.get("customer_language", "en"),
                            reason=reason, conversation_id=record.id, agent=agent))
        record.status = "transferred"
        record.state.transfer = Transferred(queue, reason, time.time(), channel)
        if channel.is_typed:  # a call waits in the PBX's queue; an SMS thread with the bot
            Handoff.of(record).wait(channel, turn.now).save(record)
        turn.ledger.touch(turn.party.session_id)

    async def _offer_instead(self, turn: Turn, pending: PendingTransfer) -> bool:
        """When the queue is long and the customer has a phone on file, offer a callback or a
        text instead of the wait (True: the long_wait journey took over)."""
        limit = self.settings.journeys.callback_offer_seconds
        if not limit or not self.queue_probes or LONG_WAIT not in self.journeys.journeys:
            return False
        channel = turn.channel
        if not (channel.is_voice or channel.is_typed):
            return False
        found = await estimate(self.queue_probes, pending.queue, channel.wording)
        if found is None or found.expected_seconds <= limit or not await self.phone_on_file(turn.record):
            return False
        record = turn.record
        record.state.pending_transfer = pending
        record.slots["wait_minutes"] = max(1, round(found.expected_seconds / 60))
        turn.note("LongWait", queue=pending.queue, expected_seconds=round(found.expected_seconds),
                  waiting=found.waiting, source=found.source)
        record.state.stack = []
        record.journey = LONG_WAIT
        await self._run_from(turn, self.journeys.journeys[LONG_WAIT].steps[0].id)
        return True

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

    def current_step(self, record: ConversationRecord) -> StepBase | None:
        """The step the conversation stands at (None outside any journey)."""
        journey = self.journeys.journeys.get(record.journey)
        if journey is None or not record.step:
            return None
        try:
            return journey.step(record.step)
        except KeyError:
            return None

    def current_ask(self, record: ConversationRecord) -> AskStep | None:
        """The question the conversation waits on an answer to (None when it waits on none)."""
        step = self.current_step(record)
        return step if isinstance(step, AskStep) else None

    def expect_of(self, step: AskStep) -> Expect:
        """What the channel should listen for while ``step`` waits for its answer."""
        return expect_for(step, self.settings.voice.endpoint.no_input_seconds)

    def ask_action(self, record: ConversationRecord, step: AskStep, channel: Channel) -> Ask:
        """The ``Ask`` of ``step`` in ``channel``'s wording, with what the channel should listen for."""
        return Ask(self.render(record, as_prompt(step.ask), channel), expect=self.expect_of(step), prompt_id=step.id)

    def render(self, record: ConversationRecord, prompt: Prompt | None, channel: Channel) -> str:
        """``prompt`` in ``channel``'s wording with the conversation's slots filled in."""
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
        from gateway.core.callbacks import CALLBACK_LOOKUPS

        return set(LOOKUPS) | set(VERIFICATION_LOOKUPS) | set(CALLBACK_LOOKUPS)

