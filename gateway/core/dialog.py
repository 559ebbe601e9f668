"""The dialog engine: runs journeys over a conversation record, one event at a time.

It is channel-agnostic and stateless between calls: everything it knows lives in the
``ConversationRecord`` (journey, step, slots, and the typed dialog state ``record.state``: retry
counters, the call stack of sub-journeys, the answered-steps history, a pending confirmation...,
:mod:`gateway.core.dialog_state`), so any gateway node can continue a conversation from the
store, on any channel. Channels are :class:`~gateway.core.channels.Channel` values here, never
compared as names.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Callable

from gateway.config import Settings
from gateway.context.store import ConversationRecord
from gateway.core.actions import Ask, Hangup, Originate, Say
from gateway.core import compliance
from gateway.core.channels import Channel
from gateway.core.events import (AnsweringMachine, CallAccepted, CallFailed, ChannelClosed, ChatMessage, DtmfPressed,
                                 Event, FormSubmitted, OptOut, QueueChoice, RecognitionFailed, Silence, StaffEvent,
                                 TransferFailed, UserSaid)
from gateway.core.dialog_state import Retries, StepUp
from gateway.core.handoff import Handoff
from gateway.core.interpret import interpret
from gateway.core.journeys import GLOBAL_INTENTS, AskStep, JourneySet, SayStep, TransferStep, as_prompt
from gateway.core.nlu import Nlu
from gateway.core.nlu.entities import parse_yes_no
from gateway.core.outbound import e164
from gateway.core.staff import StaffTurns
from gateway.core.steps import PENDING_QUEUE
from gateway.core.trust import REQUIREMENTS, Assurance, same_number
from gateway.core.turn import Turn
from gateway.core.verification import TrustServices
from gateway.integrations.crm import Crm
from gateway.core.voicemail import on_answering_machine

log = logging.getLogger(__name__)

GLOBAL_INTENT_CONFIDENCE = 0.5  # a global intent must be this sure to interrupt slot filling
PRE_EMPTING_INTENTS = ("agent", "help")
"""Heard even when the same words also answer a closed question ("no, get me an agent", "yes,
I need help"). Not "go back" and "repeat": bare answers score on them ("wrong" 0.78 go_back)."""
CLOSED_KINDS = ("digits", "yesno", "choice")
SWITCH_INTENT_CONFIDENCE = 0.6  # a new topic must be this sure to leave the current journey
TERMINATORS = "#"
CLEAR_LEAD_FLOOR = 0.3   # below the threshold, a topic this likely that leads the rest
CLEAR_LEAD_RATIO = 3.0   # by this factor is still taken (one clear candidate, not a guess)
CALLBACK_ANSWER_SECONDS = 600.0
"""A call the gateway places must be answered (and its session opened) within this time for the
answered call to be recognised as that call."""
CALLBACK_JOURNEY = "callback"
BOOKED_CALLBACK = TransferStep(
    id="booked_callback", transfer=PENDING_QUEUE,
    prompt="This is the call back you asked for. I'm connecting you with an agent now; they'll see everything "
           "we've discussed.")
"""What a customer who booked a callback instead of waiting hears once the call is answered."""
MAX_TRANSFER_FAILURES = 2
"""Hand-overs the telephony side could not carry out before the bot ends the call politely: a
PBX with no reachable agent (or a caller gone silent) is never sent round the same loop forever."""
NO_AGENT_GOODBYE = ("I'm sorry, I can't reach an agent right now. Everything we've discussed is saved, so "
                    "nobody will ask you to start again when you call back. Goodbye.")
CONFIRMATION = AskStep(id="confirm", ask="?", expect="yesno", slot="c")
"""The yes/no question behind every confirmation ("Just to confirm: ...?")."""


class DialogEngine(StaffTurns):
    """Runs journeys. ``start`` and ``handle`` change the turn's record and fill ``turn.out``."""

    def __init__(self, journeys: JourneySet, nlu: Nlu, crm: Crm, settings: Settings, services: TrustServices,
                 rasa: Any = None, today: Callable[[], date] = date.today):
        super().__init__(journeys, crm, settings, services, rasa=rasa, today=today)
        self.nlu = nlu

    # ----------------------------------------------------------------- entry points
    async def start(self, turn: Turn, *, resumed: bool, journey: str = "", outbound: bool = False) -> None:
        """Begin (or resume on the turn's channel) the conversation; the opening actions go to ``turn.out``.
        ``outbound``: the gateway started this session itself (it says who calls first)."""
        record, out = turn.record, turn.out
        if turn.channel is Channel.OUTREACH:  # the gateway's dialer: the journey waits for the answered call
            record.status = "active"
            record.state.pending_journey = journey or self.settings.journeys.default
            return
        if outbound:  # the gateway called (or texted): who is calling, that it is automated, how to stop
            compliance.mark_outbound(record, turn.party.session_id, self.settings.compliance)
            disclosure = self.journeys.journeys.get(compliance.OUTBOUND_START)
            out.extend(Say(self.render(record, as_prompt(step.say), turn.channel), barge_in=False,
                           prompt_id=f"{compliance.OUTBOUND_START}.{step.id}")
                       for step in (disclosure.steps if disclosure else ()) if isinstance(step, SayStep))
            booked = record.state.callback_for_agent
            if turn.channel.is_voice and booked is not None:
                # the callback the customer booked instead of waiting: straight to the agents
                record.state.callback_for_agent = None
                record.state.pending_transfer = booked
                record.status = "active"
                await self.transfer(turn, BOOKED_CALLBACK, reason=booked.reason or "callback the customer booked")
                return
        handoff = Handoff.of(record)
        if resumed and handoff.engaged:
            return  # back in a chat that people have: no bot (the chat replays what people sent)
        if resumed and record.step and record.status == "active":
            name = record.slots.get("customer_first_name", "") if record.customer_id else ""
            out.append(Say(f"Welcome back{', ' + name if name else ''}. Let's continue where we left off."
                           + (" You're already verified." if turn.party.verified else "")))
            step = self.current_ask(record)
            needed = self.required_level(record)
            if turn.party.level < needed:
                # a claim brought the caller back: context follows, account data waits for a check
                await self._step_up(turn, needed)
                return
            if step is not None:
                out.append(self.ask_action(record, step, turn.channel))
                return
            await self._goto(turn, f"journey:{self.settings.journeys.default}")
            return
        record.status = "active"
        if record.customer_id and "customer_name" not in record.slots:
            await self._load_customer(record)
        pending, record.state.pending_journey = record.state.pending_journey, ""
        await self.enter(turn, journey or pending or self.settings.journeys.default)

    async def handle(self, turn: Turn, event: Event) -> None:
        record = turn.record
        via = compliance.opt_out_route(turn, event, self.nlu, self.current_ask(record),
                                       self.settings.compliance.opt_out_key)
        if via:  # before any gate: whoever is on the line may ask not to be called again
            await compliance.opt_out(turn, via=via, number=event.number if isinstance(event, OptOut) else "",
                                     phone=await self.phone_on_file(record), dnc=self.services.policy.dnc,
                                     organisation=self.settings.compliance.organisation)
            return
        if isinstance(event, CallFailed):
            log.info("conversation %s: the call placed was not answered (%s)", record.id, event.reason)
            return
        if isinstance(event, TransferFailed):
            await self._transfer_failed(turn, event)
            return
        if isinstance(event, AnsweringMachine):
            on_answering_machine(turn, event, self.journeys, self.settings.compliance.organisation)
            return
        if isinstance(event, StaffEvent):
            await self.staff(turn, event)
            return
        handoff = Handoff.of(record)
        if handoff.engaged and isinstance(event, (UserSaid, ChatMessage, DtmfPressed, Silence, RecognitionFailed,
                                                  QueueChoice)):
            await self.while_engaged(turn, handoff, event if isinstance(event, QueueChoice) else None)
            return
        if isinstance(event, (UserSaid, ChatMessage, DtmfPressed, Silence, RecognitionFailed)) and \
                await self._gate(turn):
            return
        if isinstance(event, (UserSaid, ChatMessage)):
            await self._answer(turn, event.text)
        elif isinstance(event, DtmfPressed):
            await self._dtmf(turn, event.digit)
        elif isinstance(event, (Silence, RecognitionFailed)):
            await self._retry(turn, "no_input" if isinstance(event, Silence) else "no_match")
        elif isinstance(event, CallAccepted):
            await self._accept_call(turn, event.number)
        elif isinstance(event, FormSubmitted):
            record.slots[f"form_{event.purpose}"] = dict(event.fields)
            record.state.forms.append(event.purpose)
            turn.out.append(Say(f"Thanks, we've received your {event.purpose.replace('_', ' ')}."))
        elif isinstance(event, ChannelClosed):
            record.state.pending_dtmf = ""
            turn.keyed = ""

    # ----------------------------------------------------------------- who may speak where
    async def _step_up(self, turn: Turn, needed: Assurance) -> None:
        """Send this party through the identity check before it goes on where the conversation
        stands; the place is kept (``step_up``) so that a session already verified, speaking in
        the same conversation meanwhile, is put back there instead of answering the check."""
        record = turn.record
        frame = record.state.push(record.journey, record.step)
        record.state.step_up = StepUp(turn.party.session_id, frame)
        record.state.confirming = ""
        await self.enter(turn, "verify_identity" if needed >= Assurance.IDENTITY else "verify_phone")

    async def _gate(self, turn: Turn) -> bool:
        """Checked before every answer: a party never acts inside a journey it has not proven
        enough for (True: the turn went to a check instead). A check another session is taking
        does not hold up a party that needs none."""
        record = turn.record
        in_check = record.journey.startswith("verify_")
        detour = record.state.step_up
        if in_check and detour is not None and detour.session != turn.party.session_id:
            journey, step = detour.frame.journey, detour.frame.step
            need = REQUIREMENTS.get(self.journeys.journeys[journey].requires or "", Assurance.NONE) \
                if journey in self.journeys.journeys else Assurance.IDENTITY
            if turn.party.level >= need:
                stack = record.state.stack
                if stack and stack[-1] == detour.frame:
                    stack.pop()
                record.journey, record.step = journey, step
                record.state.step_up = None
                record.state.confirming = ""
                return False
        if not in_check and record.step:
            needed = self.required_level(record)
            if turn.party.level < needed:
                log.info("conversation %s: a %s session spoke inside a journey needing %s; checking first",
                         record.id, turn.party.level.name.lower(), needed.name.lower())
                await self._step_up(turn, needed)
                return True
        return False

    # ----------------------------------------------------------------- calls the customer asked for
    async def _offer_call(self, turn: Turn) -> None:
        """The customer asked (in a digital channel) to be called: a verified party is offered a
        call to the number on file; anyone else is verified first. The conversation then goes
        back to where it was."""
        record = turn.record
        if not turn.can_place_calls:
            turn.out.append(Say("I can't place calls from here at the moment. You can call us, and we'll pick up "
                                "right where we left off."))
            step = self.current_ask(record)
            if step is not None:
                turn.out.append(self.ask_action(record, step, turn.channel))
            return
        if record.journey and record.step and record.journey != CALLBACK_JOURNEY:
            record.state.push(record.journey, record.step)
        await self.enter(turn, CALLBACK_JOURNEY)

    async def _accept_call(self, turn: Turn, requested: str) -> None:
        """Place the call the core offered: to the number on file, or to a number a verified
        customer typed and confirmed. Nothing is dialled without an offer to this session."""
        record, ledger, out = turn.record, turn.ledger, turn.out
        phone = await self.phone_on_file(record)
        if turn.channel is Channel.OUTREACH:
            # the gateway's own reminder escalation: only ever the number on file
            if phone:
                await self._place_call(turn, phone, carries=Assurance.PHONE, reason="reminder")
            return
        offer = ledger.take_offer(turn.party.session_id, turn.now)
        if offer is None or not phone:
            turn.note("CallRefused", reason="no_offer", channel=turn.channel)
            log.warning("conversation %s: call request without an offer on %s refused", record.id, turn.channel)
            out.append(Say("There's no call offer to accept right now. If you'd like us to call you, just ask."))
            return
        number = e164(requested) if requested else phone
        if requested and not number:
            ledger.hold_offer(offer)
            out.append(Say("I can only call a full international number, like +1 555 123 4567."))
            return
        if same_number(number, phone):
            carries = Assurance.IDENTITY if turn.party.verified else Assurance.PHONE
            await self._place_call(turn, phone, carries=carries, reason="chat-to-voice")
            return
        if not turn.party.verified:
            ledger.hold_offer(offer)
            turn.note("CallRefused", reason="unverified_number", channel=turn.channel)
            out.append(Say(f"For your security, I can only call the number on your account, ending in {phone[-4:]}."))
            return
        ledger.hold_offer(offer)
        ledger.data["confirm_call"] = {"session": turn.party.session_id, "number": number}
        out.append(Ask(f"Just to confirm: shall I call you at {' '.join(number)}, a number that is not on your "
                       "account?", expect=self.expect_of(CONFIRMATION)))

    async def _confirm_call(self, turn: Turn, text: str) -> bool:
        """A verified customer's answer to "shall I call this other number?"; False when the
        text is not an answer to it (the pending confirmation is dropped)."""
        pending = turn.ledger.data.pop("confirm_call", None)
        if not pending or pending.get("session") != turn.party.session_id:
            return False
        answer = parse_yes_no(text)
        if answer is None:
            return False
        offer = turn.ledger.take_offer(turn.party.session_id, turn.now)
        if not answer or offer is None:
            turn.out.append(Say("All right, I won't call that number."))
            return True
        await self._place_call(turn, str(pending["number"]), carries=Assurance.CLAIM, reason="chat-to-voice")
        return True

    async def _place_call(self, turn: Turn, number: str, *, carries: Assurance, reason: str) -> None:
        record = turn.record
        if not turn.can_place_calls:
            turn.note("CallRefused", reason="no_telephony", channel=turn.channel)
            turn.out.append(Say("I can't place calls from here at the moment. You can call us, and we'll pick up "
                                "right where we left off."))
            return
        refusal = await self.services.policy.authorize("call", record.id, number)
        if refusal is not None:
            turn.note("CallRefused", reason=refusal.reason, channel=turn.channel)
            turn.out.append(Say(refusal.text))
            return
        nonce = turn.ledger.expect_callback(number, carries=carries, now=turn.now, ttl_seconds=CALLBACK_ANSWER_SECONDS)
        turn.out.append(Say(f"Calling you now at the number ending in {number[-4:]}."))
        turn.out.append(Originate(number=number, conversation_id=record.id, reason=reason, callback=nonce))

    # ----------------------------------------------------------------- answers
    async def _dtmf(self, turn: Turn, digit: str) -> None:
        record = turn.record
        step = self.current_ask(record)
        if step is None:
            return
        if step.expect in ("yesno", "choice") or (step.expect == "open" and digit == "0"):
            if step.expect == "open":
                await self._global(turn, "agent")
            else:
                await self._fill(turn, step, digit, from_dtmf=True)
            return
        # keys of a sensitive step (PIN, one-time code) stay in memory, others in the record
        buffer = turn.keyed if step.sensitive else record.state.pending_dtmf
        turn.keyed = ""
        record.state.pending_dtmf = ""
        if digit in TERMINATORS:
            await self._fill(turn, step, buffer, from_dtmf=True)
            return
        buffer += digit
        hi = (step.digits or (0, 4 if step.expect == "dob_or_pin" else 32))[1]
        if step.expect == "dob_or_pin":
            hi = 4
        if len(buffer) >= hi:
            await self._fill(turn, step, buffer, from_dtmf=True)
        elif step.sensitive:
            turn.keyed = buffer
        else:
            record.state.pending_dtmf = buffer

    async def _answer(self, turn: Turn, text: str) -> None:
        record, channel = turn.record, turn.channel
        turn.text = text
        if "confirm_call" in turn.ledger.data and await self._confirm_call(turn, text):
            return
        step = self.current_ask(record)
        if record.state.confirming:
            await self._confirmation(turn, text)
            return
        if step is None:
            await self._goto(turn, f"journey:{self.settings.journeys.default}")
            return
        parsed = self.nlu.parse(text)
        intent, confidence = self._journey_intent(parsed)
        record.state.heard_frustration(parsed.entities.get("frustration", 0.0))
        routing = step.routes
        answers_a_choice = step.expect == "choice" and interpret(step, text, today=self.today()) is not None
        if intent == "call_me" and not channel.is_voice and confidence >= self.settings.nlu.threshold \
                and not answers_a_choice:  # "a callback please" answers a menu that offers one
            await self._offer_call(turn)
            return
        if routing or step.expect == "open":
            if intent in GLOBAL_INTENTS and confidence >= GLOBAL_INTENT_CONFIDENCE:
                await self._global(turn, intent)
                return
            if routing:
                await self._route(turn, intent)
                return
            await self._fill(turn, step, text)
            return
        value = interpret(step, text, today=self.today())
        if step.expect in CLOSED_KINDS and intent in PRE_EMPTING_INTENTS and confidence >= GLOBAL_INTENT_CONFIDENCE:
            await self._global(turn, intent)
            return
        if value is not None:
            await self._fill_value(turn, step, value)
            return
        if intent in GLOBAL_INTENTS and confidence >= GLOBAL_INTENT_CONFIDENCE:
            await self._global(turn, intent)
        elif intent and confidence >= SWITCH_INTENT_CONFIDENCE and self.journeys.for_intent(intent) \
                and self.journeys.for_intent(intent).journey != record.journey:
            await self._route(turn, intent)
        else:
            await self._retry(turn, "no_match")

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

    async def _route(self, turn: Turn, intent: str | None) -> None:
        record = turn.record
        if intent == "call_me" and not turn.channel.is_voice:
            await self._offer_call(turn)
            return
        if intent in GLOBAL_INTENTS:
            await self._global(turn, intent)
            return
        journey = self.journeys.for_intent(intent) if intent else None
        if journey is None:
            await self._retry(turn, "no_match")
            return
        record.state.intent = intent
        record.state.stack = []
        await self.enter(turn, journey.journey)

    async def _fill(self, turn: Turn, step: AskStep, text: str, from_dtmf: bool = False) -> None:
        value = interpret(step, text, today=self.today(), from_dtmf=from_dtmf)
        if value is None:
            await self._retry(turn, "no_match")
        else:
            await self._fill_value(turn, step, value)

    async def _fill_value(self, turn: Turn, step: AskStep, value: Any) -> None:
        record = turn.record
        if step.slot:
            record.slots[step.slot] = value
        record.state.retries = Retries()
        record.state.answered(record.journey, step.id)
        if step.confirm is not None:
            record.state.confirming = step.id
            turn.out.append(Ask(self.render(record, as_prompt(step.confirm), turn.channel),
                                expect=self.expect_of(CONFIRMATION)))
            return
        await self._goto(turn, step.next or self._after(record, step))

    async def _confirmation(self, turn: Turn, text: str) -> None:
        record = turn.record
        step = self.current_ask(record)
        answer = interpret(CONFIRMATION, text, today=self.today())
        if answer is None or step is None:
            await self._retry(turn, "no_match")
            return
        record.state.confirming = ""
        if answer == "yes":
            await self._goto(turn, step.next or self._after(record, step))
        else:
            if step.slot:
                record.slots.pop(step.slot, None)
            turn.out.append(self.ask_action(record, step, turn.channel))

    # ----------------------------------------------------------------- global intents and retries
    async def _global(self, turn: Turn, intent: str) -> None:
        record, channel, out = turn.record, turn.channel, turn.out
        step = self.current_ask(record)
        if intent == "agent":
            await self.transfer(turn, None, reason="customer asked for an agent")
        elif intent == "repeat":
            if step is not None:
                out.append(self.ask_action(record, step, channel))
        elif intent == "help":
            help_text = as_prompt(step.help) if step is not None else None
            out.append(Say(self.render(record, help_text, channel) if help_text else
                           "You can answer the question, say repeat, go back, or ask for an agent at any time."))
            if step is not None:
                out.append(self.ask_action(record, step, channel))
        elif intent == "go_back":
            history = record.state.history
            if history:
                frame = history.pop()
                journey, step_id = frame.journey, frame.step
                back = self.journeys.journeys[journey].step(step_id)
                record.journey, record.step = journey, step_id
                out.append(Say("Sure, let's go back."))
                if isinstance(back, AskStep):  # the history holds answered questions only
                    if back.slot:
                        record.slots.pop(back.slot, None)
                    out.append(self.ask_action(record, back, channel))
            else:
                out.append(Say("We're at the beginning already."))
                if step is not None:
                    out.append(self.ask_action(record, step, channel))
        elif intent == "goodbye":
            out.append(Say("Thank you for contacting us. Goodbye!"))
            out.append(Hangup(reason="caller said goodbye"))
            record.status = "closed"

    async def _transfer_failed(self, turn: Turn, event: TransferFailed) -> None:
        """The call could not be handed to people: the bot keeps the caller (where they were, or
        the main menu) and, after :data:`MAX_TRANSFER_FAILURES`, says goodbye and hangs up."""
        record, out, state = turn.record, turn.out, turn.record.state
        state.transfer_failures += 1
        state.retries = Retries()
        record.status = "active"
        log.warning("conversation %s: transfer to %s not carried out (%d so far): %s", record.id,
                    event.queue or "the queue", state.transfer_failures, event.detail)
        if state.transfer_failures >= MAX_TRANSFER_FAILURES:
            out.append(Say(NO_AGENT_GOODBYE, barge_in=False))
            out.append(Hangup(reason="no agent reachable"))
            record.status = "closed"
            return
        out.append(Say("I'm sorry, I couldn't connect you to an agent just now.", barge_in=False))
        step = self.current_ask(record)
        if step is not None:
            out.append(self.ask_action(record, step, turn.channel))
        else:  # the journey's own transfer step: back to what the bot can help with
            state.stack = []
            await self._return(turn)

    async def _retry(self, turn: Turn, kind: str) -> None:
        record, out = turn.record, turn.out
        step = self.current_ask(record)
        if step is None:
            return
        record.state.retries = record.state.retries.bumped(kind)
        limit = self.settings.journeys.max_no_input if kind == "no_input" else self.settings.journeys.max_no_match
        if record.state.retries.count(kind) >= limit:
            out.append(Say("I'm sorry, I'm having trouble understanding." if kind == "no_match"
                           else "I'm sorry, I can't hear you."))
            await self.transfer(turn, None, reason=f"repeated {kind.replace('_', '-')}")
            return
        custom = step.retry_prompt(kind)
        if custom is not None:
            out.append(Ask(self.render(record, custom, turn.channel), expect=self.expect_of(step),
                           prompt_id=f"{step.id}.{kind}"))
            return
        lead = "Sorry, I didn't get that." if kind == "no_match" else "Are you still there?"
        out.append(Say(lead, prompt_id=f"{step.id}.{kind}"))  # the log tells a retry from a repeat
        out.append(self.ask_action(record, step, turn.channel))
