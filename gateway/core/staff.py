"""What the people around the bot do in a conversation: accept, type, follow up, hand back, close,
take over, steer.

The dialog engine hands every :class:`~gateway.core.events.StaffEvent` here. A staff event is
never the customer's answer (docs/trust.md): it is logged under the staff channel, it never
touches what a customer's session proved, and when the bot goes on for the customer (a hand-back,
a steering instruction, a take-over announcement) it goes on as the customer's *own* session
would, on the customer's channel: every later answer is still gated on what that session holds.

Actions the customer should see (``AgentSay``, ``AgentJoined``, ``AgentLeft``, ``Say``, ``Ask``,
``Transfer``, ``Hangup``) go to ``turn.out``; what only the staff member should read (a refusal,
why a follow-up was not sent) is a :class:`~gateway.core.actions.StaffNotice`.
"""

from __future__ import annotations

import logging

from gateway.core.actions import AgentJoined, AgentLeft, AgentSay, Hangup, Say, SendFollowUp, StaffNotice
from gateway.core.events import (AgentConnected, AgentDropped, AgentFollowUp, AgentMessage, Disposition, HandBack,
                                 QueueChoice, StaffEvent, Steer, TakeOver)
from gateway.core.channels import Channel
from gateway.core.dialog_state import Retries
from gateway.core.handoff import Handoff
from gateway.core.steps import JourneyRunner
from gateway.core.turn import Turn

log = logging.getLogger(__name__)

SECRET_LINK_WORDS = ("upload", "reset", "document")
"""A link whose purpose names one of these is a secret (docs/trust.md): it goes by SMS to the
phone on file only, never into a chat an agent opens it to."""
FOLLOW_UP_TEMPLATES = {"track_order": "order_tracking", "upload_document": "upload_document",
                       "complete_form": "complete_form", "confirm_payment": "confirm_payment",
                       "chat": "continue_chat", "": "complete_form"}
"""The message template an agent's follow-up uses for each link purpose."""
OFFER_AGENT_TEXT = "If you'd rather talk to a person, just say agent and I'll connect you right away."
END_TEXT = ("Thank you for your patience. I'll end our conversation here; you're welcome to contact us again "
            "any time. Goodbye!")
STEER_INSTRUCTIONS = ("goto", "offer_agent", "end")


def customer_channel(turn: Turn) -> Channel:
    """The channel the customer is on: where the conversation was handed over, else the last
    customer channel it surfaced on."""
    handoff = Handoff.of(turn.record)
    if handoff.channel:
        return Channel.of(handoff.channel)
    transfer = turn.record.state.transfer
    if transfer is not None and transfer.channel:
        return Channel.of(transfer.channel)
    channels = [c for c in map(Channel.of, turn.record.channels) if not c.is_staff]
    return channels[-1] if channels else Channel.CHAT


class StaffTurns(JourneyRunner):
    """The engine's handling of staff events and of the customer's turns while people have it."""

    def as_customer(self, turn: Turn) -> None:
        """From here on the turn speaks to the customer as their own last session: their channel's
        wording, their session's proofs (never the staff member's)."""
        turn.channel = customer_channel(turn)
        turn.party = turn.ledger.party(turn.ledger.last_session, turn.channel, turn.now)

    async def staff(self, turn: Turn, event: StaffEvent) -> None:
        record = turn.record
        handoff = Handoff.of(record)
        if record.status == "closed" and not isinstance(event, AgentMessage):
            self._refuse(turn, event, "the conversation is closed")
            return
        if isinstance(event, AgentConnected):
            record.status = "transferred"
            record.state.agent = event.agent_id
            handoff.taken(event.agent_id, event.name, turn.now, customer_channel(turn)).save(record)
            turn.out.append(AgentJoined(agent_id=event.agent_id, name=event.name or event.agent_id))
        elif isinstance(event, AgentMessage):
            if handoff.agent != event.agent_id or record.status == "closed":
                self._refuse(turn, event, f"{event.agent_id} does not hold this conversation")
                return
            if not customer_channel(turn).is_typed:
                self._refuse(turn, event, f"the customer is on {customer_channel(turn)}, where typed messages do not "
                                          "reach them; call them, or send an SMS follow-up")
                return
            turn.out.append(AgentSay(agent_id=event.agent_id, name=handoff.agent_name or event.agent_id,
                                     text=event.text, message_id=event.message_id))
        elif isinstance(event, AgentFollowUp):
            if handoff.agent != event.agent_id:
                self._refuse(turn, event, f"{event.agent_id} does not hold this conversation")
                return
            await self._agent_follow_up(turn, event)
        elif isinstance(event, HandBack):
            await self._hand_back(turn, handoff, event)
        elif isinstance(event, Disposition):
            handoff.closed(event.code, event.notes, event.agent_id, turn.now).save(record)
            record.status = "closed"
            turn.out.append(AgentLeft(name=handoff.agent_name or event.agent_id, reason="closed"))
            turn.out.append(Hangup(reason="closed by agent"))
        elif isinstance(event, AgentDropped):
            if handoff.agent == event.agent_id:
                handoff.wait(handoff.channel, turn.now).save(record)
                turn.out.append(AgentLeft(name=handoff.agent_name or event.agent_id, reason="dropped"))
        elif isinstance(event, TakeOver):
            await self._take_over(turn, event)
        elif isinstance(event, Steer):
            await self._steer(turn, handoff, event)

    def _refuse(self, turn: Turn, event: StaffEvent, why: str) -> None:
        log.warning("conversation %s: %s refused: %s", turn.record.id, event.kind, why)
        turn.note("StaffRefused", event=event.kind, reason=why)
        turn.out.append(StaffNotice(text=f"Not done: {why}."))

    # ----------------------------------------------------------------- agents
    async def _agent_follow_up(self, turn: Turn, event: AgentFollowUp) -> None:
        record = turn.record
        purpose = event.purpose.strip().lower()
        template = FOLLOW_UP_TEMPLATES.get(purpose, "complete_form")
        if event.via == "link":
            if any(word in purpose for word in SECRET_LINK_WORDS):
                self._refuse(turn, event, f"a {purpose} link is a secret: it goes by SMS to the phone on file only")
                return
            if not customer_channel(turn).is_typed:
                self._refuse(turn, event, "the customer is not in a chat; send the link by SMS")
                return
            turn.out.append(SendFollowUp(channel=Channel.CHAT, template=template, link_purpose=purpose,
                                         conversation_id=record.id))
            turn.out.append(StaffNotice(text="The link is in the customer's chat."))
            return
        phone = await self.phone_on_file(record)
        if not phone:
            self._refuse(turn, event, "no phone number on file for this customer")
            return
        refusal = await self.services.policy.authorize("sms", record.id, phone)
        if refusal is not None:
            turn.note("FollowUpRefused", template=template, reason=refusal.reason)
            turn.out.append(StaffNotice(text=f"Not sent: {refusal.reason}."))
            return
        turn.out.append(SendFollowUp(channel=Channel.SMS, template=template, to=phone, link_purpose=purpose,
                                     conversation_id=record.id))
        turn.out.append(StaffNotice(text=f"Sent by SMS to the phone on file ending in {phone[-4:]}."))

    async def _hand_back(self, turn: Turn, handoff: Handoff, event: HandBack) -> None:
        record = turn.record
        journey = self.journeys.journeys.get(event.journey)
        step_id = event.step or (journey.steps[0].id if journey else "")
        if journey is None or step_id not in {s.id for s in journey.steps}:
            self._refuse(turn, event, f"no step {step_id or '-'} in journey {event.journey or '-'}")
            return
        handoff.released().save(record)
        record.status = "active"
        record.state.agent = ""
        turn.out.append(AgentLeft(name=handoff.agent_name or event.agent_id, reason="handed_back"))
        self.as_customer(turn)
        await self._continue_at(turn, event.journey, step_id)

    async def _continue_at(self, turn: Turn, journey: str, step_id: str) -> None:
        """The bot goes on at ``step_id`` of ``journey`` for the customer: a journey their session
        has not proven enough for starts with its check (the place is kept for after it)."""
        record = turn.record
        record.state.stack = []
        record.state.retries = Retries()
        record.state.confirming = ""
        required = self.journeys.journeys[journey].requires
        if required and not turn.party.holds(required):
            record.state.push(journey, step_id)
            await self.enter(turn, f"verify_{required}")
            return
        record.journey = journey
        await self._run_from(turn, step_id)

    # ----------------------------------------------------------------- supervisors
    async def _take_over(self, turn: Turn, event: TakeOver) -> None:
        record = turn.record
        self.as_customer(turn)
        reason = f"taken over by supervisor {event.supervisor}"
        await self.transfer(turn, None, reason=reason, queue=event.queue, agent=event.agent)
        if event.agent:
            Handoff.of(record).taken(event.agent, event.agent, turn.now, turn.channel).save(record)
            record.state.agent = event.agent
            turn.out.append(AgentJoined(agent_id=event.agent, name=event.agent))

    async def _steer(self, turn: Turn, handoff: Handoff, event: Steer) -> None:
        record = turn.record
        if handoff.engaged:
            self._refuse(turn, event, "people have this conversation now; steer the bot before a transfer or "
                                      "after a hand-back")
            return
        if event.instruction not in STEER_INSTRUCTIONS:
            self._refuse(turn, event, f"instruction must be one of {', '.join(STEER_INSTRUCTIONS)}")
            return
        journey = self.journeys.journeys.get(record.journey)
        if event.instruction == "goto" and (journey is None or event.step not in {s.id for s in journey.steps}):
            self._refuse(turn, event, f"journey {record.journey or '-'} has no step {event.step or '-'}")
            return
        self.as_customer(turn)
        if event.instruction == "goto":
            await self._continue_at(turn, record.journey, event.step)
        elif event.instruction == "offer_agent":
            turn.out.append(Say(OFFER_AGENT_TEXT))
            step = self.current_ask(record)
            if step is not None:
                turn.out.append(self.ask_action(record, step, turn.channel))
        else:
            turn.out.append(Say(END_TEXT, barge_in=False))
            turn.out.append(Hangup(reason="ended by supervisor"))
            record.status = "closed"

    # ----------------------------------------------------------------- the customer, while people have it
    async def while_engaged(self, turn: Turn, handoff: Handoff, event: QueueChoice | None) -> None:
        """A customer's turn while an agent holds the conversation or it waits for one: the bot
        stays quiet (the words are in the log, where the agent reads them); a waiting customer
        may choose to leave a message or be called back instead."""
        if event is None or not handoff.waiting:
            return
        record = turn.record
        if event.choice == "callback":
            phone = await self.phone_on_file(record)
            if not phone:
                turn.out.append(Say("I don't have a phone number on file to call you back. You can leave a message "
                                    "here instead, and an agent will answer it."))
                return
            handoff.chose("callback").save(record)
            turn.out.append(Say(f"All right: an agent will call you back at your number ending in {phone[-4:]} "
                                "as soon as one is free. You can close this window."))
        elif event.choice == "message":
            handoff.chose("message").save(record)
            turn.out.append(Say("Of course: type your message here and an agent will answer it as soon as they "
                                "can. You can close this window; we'll keep everything."))
