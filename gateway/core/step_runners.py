"""One runner per kind of journey step, found by the step's class (:data:`STEP_RUNNERS`).

A runner gets the :class:`~gateway.core.steps.JourneyRunner` (settings, CRM, rendering, transfers),
the turn, the journey and its step, and answers where to go next: a step id, ``END``,
``journey:<name>``, or ``None`` when the turn waits for the customer (a question asked, a call
handed to people, the conversation ended). A new kind of step is its class in
:mod:`gateway.core.journey_steps` and one function here under ``@runs(ThatStep)``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from gateway.core.actions import Hangup, OfferCall, Say, SendFollowUp
from gateway.core.channels import Channel
from gateway.core.journey_steps import (STEP_KINDS, AskStep, BranchStep, CallStep, EndStep, FollowUpStep,
                                        OfferCallStep, Prompt, RunStep, SayStep, StepBase, TransferStep, as_prompt)
from gateway.core.lookups import LookupContext, Outcome, run_lookup
from gateway.core.trust import REQUIREMENTS
from gateway.core.turn import Turn

if TYPE_CHECKING:
    from gateway.core.journeys import Journey
    from gateway.core.steps import JourneyRunner

log = logging.getLogger(__name__)

CHANNEL_BRANCH = "channel"
"""``branch: channel`` branches on the channel the customer is on now: voice, chat or sms
(:attr:`Channel.branch_value <gateway.core.channels.Channel.branch_value>`)."""
RASA_PREFIX = "rasa:"

S = TypeVar("S", bound=StepBase)
StepRunner = Callable[["JourneyRunner", Turn, "Journey", Any], Awaitable[str | None]]
STEP_RUNNERS: dict[type[StepBase], StepRunner] = {}
"""The runner of each kind of step (by its class)."""


def runs(kind: type[S]) -> Callable[[Callable[["JourneyRunner", Turn, "Journey", S], Awaitable[str | None]]],
                                    Callable[["JourneyRunner", Turn, "Journey", S], Awaitable[str | None]]]:
    """Register the decorated function as the runner of steps of class ``kind``."""
    def register(func: Callable[["JourneyRunner", Turn, "Journey", S], Awaitable[str | None]]) \
            -> Callable[["JourneyRunner", Turn, "Journey", S], Awaitable[str | None]]:
        if kind in STEP_RUNNERS:
            raise ValueError(f"{kind.__name__} already has a runner")
        STEP_RUNNERS[kind] = func
        return func
    return register


@runs(AskStep)
async def ask(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: AskStep) -> str | None:
    if step.slot and step.skip_if_slot and step.slot in turn.record.slots:
        return journey.next_of(step)
    turn.out.append(runner.ask_action(turn.record, step, turn.channel))
    return None


@runs(SayStep)
async def say(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: SayStep) -> str | None:
    turn.out.append(Say(runner.render(turn.record, as_prompt(step.say), turn.channel), prompt_id=step.id))
    return journey.next_of(step)


@runs(RunStep)
async def run(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: RunStep) -> str | None:
    if step.run.startswith(RASA_PREFIX):
        outcome = await _rasa(runner, turn, step.run.removeprefix(RASA_PREFIX))
    else:
        record = turn.record
        ctx = LookupContext(crm=runner.crm, slots=record.slots, state=record.state, customer_id=record.customer_id,
                            caller_id=record.caller_id, channel=turn.channel, args=dict(step.args),
                            today=runner.today(), turn=turn, services=runner.services)
        outcome = await run_lookup(step.run, ctx)
    _apply(runner, turn, outcome, journey)
    return step.outcomes.get(outcome.name) or step.outcomes.get("default") or journey.next_of(step)


@runs(BranchStep)
async def branch(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: BranchStep) -> str | None:
    if step.branch == CHANNEL_BRANCH:
        value = turn.channel.branch_value
    else:
        value = str(turn.record.slots.get(step.branch, "")).lower()
    return step.cases.get(value) or step.cases.get("default") or journey.next_of(step)


@runs(TransferStep)
async def transfer(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: TransferStep) -> str | None:
    await runner.transfer(turn, step, reason=step.reason)
    return None


@runs(FollowUpStep)
async def follow_up(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: FollowUpStep) -> str | None:
    """A follow-up goes where the journey says: ``sms`` to the phone on file only (never into
    the chat, never to a number the party gave), ``chat`` into the conversation's chat."""
    record, channel, out = turn.record, turn.channel, turn.out
    text = runner.render(record, Prompt(text=step.message), channel) if step.message else ""
    template = step.template or step.id
    if step.follow_up == Channel.CHAT:
        out.append(SendFollowUp(channel=Channel.CHAT, template=template, text=text, link_purpose=step.link,
                                conversation_id=record.id))
    else:
        phone = await runner.phone_on_file(record)
        if not phone:
            log.info("conversation %s: follow-up %s skipped: no phone number on file", record.id, step.template)
            out.append(Say("I don't have a phone number on file to send that to."))
            return journey.next_of(step)
        refusal = await runner.services.policy.authorize("sms", record.id, phone)
        if refusal is not None:
            turn.note("FollowUpRefused", template=template, reason=refusal.reason)
            out.append(Say(refusal.text))
            return journey.next_of(step)
        out.append(SendFollowUp(channel=Channel.SMS, template=template, text=text, to=phone, link_purpose=step.link,
                                conversation_id=record.id))
    if step.prompt is not None:
        out.append(Say(runner.render(record, as_prompt(step.prompt), channel)))
    return journey.next_of(step)


@runs(OfferCallStep)
async def offer_call(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: OfferCallStep) -> str | None:
    record = turn.record
    phone = record.slots.get("customer_phone", "")
    if not turn.channel.is_voice and phone:
        turn.ledger.offer_call(turn.party.session_id, phone, turn.now, runner.settings.trust.offer_minutes * 60)
        turn.out.append(OfferCall(text=runner.render(record, as_prompt(step.offer_call), turn.channel), number=phone))
    return journey.next_of(step)


@runs(CallStep)
async def call(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: CallStep) -> str | None:
    turn.record.state.push(journey.journey, step.next or journey.after(step.id))
    await runner.enter(turn, step.call)
    return None


@runs(EndStep)
async def end(runner: "JourneyRunner", turn: Turn, journey: "Journey", step: EndStep) -> str | None:
    record = turn.record
    turn.out.append(Say(runner.render(record, as_prompt(step.end), turn.channel), barge_in=False, prompt_id=step.id))
    turn.out.append(Hangup(reason="completed"))
    record.status = "closed"
    return None


# ----------------------------------------------------------------- what a run step needs
async def _rasa(runner: "JourneyRunner", turn: Turn, action: str) -> Outcome:
    record = turn.record
    if runner.rasa is None:
        log.warning("journey step runs rasa:%s but no Rasa action server is configured", action)
        return Outcome("error")
    try:
        result = await runner.rasa.run(action, sender_id=record.id, slots=dict(record.slots),
                                       latest_message={"text": turn.text})
    except Exception as exc:  # the Rasa client raises RasaError; anything else is the same failure
        log.warning("rasa action %s failed: %s", action, exc)
        return Outcome("error")
    slots = {e["name"]: e.get("value") for e in result.events if e.get("event") == "slot" and "name" in e}
    for response in result.responses:
        if response.get("text"):
            turn.out.append(Say(response["text"]))
    return Outcome(str(slots.pop("outcome", None) or "done"), slots)


def _apply(runner: "JourneyRunner", turn: Turn, outcome: Outcome, journey: "Journey") -> None:
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
                                           runner.settings.trust.verified_minutes * 60)
    turn.out.extend(outcome.actions)
    for other in journey.steps:  # what a sensitive question was answered with never outlives the lookup
        if isinstance(other, AskStep) and other.sensitive and other.slot:
            record.slots.pop(other.slot, None)


_MISSING = [kind.__name__ for kind in STEP_KINDS if kind not in STEP_RUNNERS]
assert not _MISSING, f"no runner for {', '.join(_MISSING)}"
