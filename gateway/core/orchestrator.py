"""The orchestrator: the one conversation core every channel talks to (``ConversationPort``).

For each event it loads the conversation from the context store, appends the (redacted) event
to the log, lets the dialog engine decide, appends the actions, saves the record and hands the
actions that another channel owns (SMS follow-ups, screen-pops, outbound calls) to the sink that
channel registered. Events of one conversation are handled one at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from gateway.config import Settings
from gateway.context.audit import AuditLog
from gateway.context.store import ConcurrentUpdate, ContextStore, ConversationRecord, LoggedEvent, StoreError
from gateway.core.actions import Action, Originate, ScreenPop, SendFollowUp, Transfer
from gateway.core.channels import Channel
from gateway.core.dialog import DialogEngine
from gateway.core.events import AgentMessage, CallStarted, ChatMessage, DtmfPressed, Event, UserSaid
from gateway.core.handoff import Handoff
from gateway.core.port import ActionSink, Observer, Opened
from gateway.core.suggestions import suggest_next_steps
from gateway.core.transcript import transcript_line
from gateway.core.trust import Assurance, Ledger, Party, caller_claim, new_session_id, same_number
from gateway.core.queue_wait import QueueProbe
from gateway.core.turn import Turn
from gateway.integrations.crm import Crm

if TYPE_CHECKING:
    from gateway.context.callbacks import Callbacks

log = logging.getLogger(__name__)

SINK_TIMEOUT_SECONDS = 10.0
TRANSCRIPT_LIMIT = 500
PRIVATE_SLOTS = {"secret", "account_number", "customer_phone", "one_time_code"}
AUDITED_NOTES = {"VerificationLocked": "verification_locked", "CallRefused": "outbound_call_refused",
                  "FollowUpRefused": "outbound_sms_refused", "CallbackRefused": "callback_refused",
                  "OptedOut": "opted_out", "OptOutFailed": "opt_out_failed"}
"""Notes the core also writes to the audit log (beside the conversation's own event log)."""
MAX_KEYED_BUFFERS = 10_000
"""Digits keyed into sensitive steps, held in memory per session until the entry completes."""
SMS_REMINDER_OFFER_SECONDS = 24 * 3600.0
"""A reminder SMS says "reply CALL": that offer of a call to the number on file holds this long."""
MASK = "[redacted]"
ONE_SINK: frozenset[type[Action]] = frozenset({Originate})
"""Actions carried out once, by the first channel registered for them (a call is placed once)."""


class UnknownConversation(KeyError):
    """An event named a conversation the store does not hold."""


def _payload(obj: Any) -> dict[str, Any]:
    data = dataclasses.asdict(obj)
    if "expect" in data and isinstance(data["expect"], dict):
        data["expect"] = {k: v for k, v in data["expect"].items() if v not in ((), 0, False, "")}
    return data


def _action_payload(action: Action) -> dict[str, Any]:
    """An action as the log keeps it: secrets the core sends (a one-time code, a callback
    nonce) never reach the log."""
    if isinstance(action, ScreenPop):
        return {"conversation_id": action.conversation_id}
    data = _payload(action)
    if isinstance(action, SendFollowUp) and action.secret:
        data["text"] = MASK
    if isinstance(action, Originate):
        data.pop("callback", None)
    return data


class Orchestrator:
    """Implements ``gateway.core.port.ConversationPort`` over a store and a dialog engine."""

    def __init__(self, settings: Settings, store: ContextStore, engine: DialogEngine,
                 clock: Callable[[], float] = time.time, audit: AuditLog | None = None):
        self.settings = settings
        self.store = store
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self._sinks: dict[type[Action], list[ActionSink]] = defaultdict(list)
        self._observers: list[Observer] = []
        self._locks: dict[str, asyncio.Lock] = {}
        # digits keyed into a sensitive step (a PIN) are never written to the store, even
        # half-entered: they wait here, on the node that holds the call, until the entry completes
        self._keyed: dict[str, str] = {}

    @property
    def crm(self) -> Crm:
        """The CRM the core reads (the parts built around the core use the same one)."""
        return self.engine.crm

    async def close(self) -> None:
        """Close the store, the shared counters, the audit log and the Rasa client (if any)."""
        if self.engine.rasa is not None:
            await self.engine.rasa.close()
        await self.engine.services.counters.close()
        await self.engine.services.policy.close()
        if self.engine.services.callbacks is not None:
            await self.engine.services.callbacks.close()
        if self.audit is not None:
            await self.audit.close()
        await self.store.close()

    @property
    def scheduled_callbacks(self) -> "Callbacks | None":
        """The callbacks customers booked (placed by the digital side's poller)."""
        return self.engine.services.callbacks

    def register_queue_probe(self, probe: QueueProbe) -> None:
        """Have the core read ``probe`` before offering a person (gateway.core.queue_wait)."""
        self.engine.queue_probes.append(probe)

    @property
    def _places_calls(self) -> bool:
        return bool(self._sinks.get(Originate))

    def register_sink(self, action_type: type[Action], sink: ActionSink) -> None:
        if action_type in ONE_SINK and self._sinks.get(action_type):
            # two telephony channels that can both place calls (SIP and AMI, FreeSWITCH): the first
            # one started places every call, so that no customer is dialled twice
            log.warning("a second channel offers to carry out %s; the first one registered does it alone",
                        action_type.__name__)
        self._sinks[action_type].append(sink)

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            if len(self._locks) > 10_000:
                for key in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[key]
            lock = self._locks[conversation_id] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ ConversationPort
    async def open(self, channel: str, *, caller_id: str = "", customer_id: str = "", conversation_id: str = "",
                   journey: str = "", event: Event | None = None, session_id: str = "", callback: str = "",
                   attestation: str = "", link_proof: str = "") -> Opened:
        channel = Channel.of(channel)
        claim = caller_claim(caller_id)
        by_caller_id = bool(claim and not customer_id)
        if by_caller_id:
            customer_id = await self._customer_for(claim)
        record: ConversationRecord | None = None
        if conversation_id:
            record = await self.store.get(conversation_id)
            if record is None:
                log.info("conversation %s not found; starting a new one", conversation_id)
        may_resume = (customer_id or claim) and not journey and (
            not by_caller_id or self.settings.trust.resume_on_caller_id)
        if record is None and may_resume:
            record = await self.store.find_recent(
                customer_id=customer_id, caller_id=claim,
                within_seconds=self.settings.context.resume_window_minutes * 60)
            if record is not None and record.status == "closed":
                record = None
        resumed = record is not None and bool(record.step)
        if record is None:
            record = await self.store.create(caller_id=claim, customer_id=customer_id, channel=channel)
        sid = session_id or new_session_id()
        logged: list[LoggedEvent] = []
        async with self._lock(record.id):
            for attempt in (1, 2):  # the conversation saved on another node meanwhile: opened again on its copy
                record = await self.store.get(record.id) or record
                if channel not in record.channels:
                    record.channels.append(channel)
                if claim and not record.caller_id:
                    record.caller_id = claim
                if customer_id and not record.customer_id:
                    record.customer_id = customer_id
                if event is not None and attempt == 1:
                    logged.append(await self.store.append(record.id, channel=channel, kind=event.kind,
                                                          payload=_payload(event)))
                if resumed and record.status == "transferred" and not Handoff.of(record).engaged:
                    record.status = "active"
                now = self.clock()
                turn = Turn(record, channel, Ledger(record).party(sid, channel, now), now, logged=list(logged),
                            can_place_calls=self._places_calls)
                await self._proofs_at_open(turn, claim=claim, callback=callback, attestation=attestation,
                                           link_proof=link_proof, event=event)
                turn.ledger.touch(sid)
                await self.engine.start(turn, resumed=resumed, journey=journey,
                                        outbound=isinstance(event, CallStarted) and event.outbound)
                try:
                    actions = await self._finish(turn)
                    break
                except ConcurrentUpdate:
                    if attempt == 2:
                        raise
                    log.warning("conversation %s changed on another node; opening it on %s again", record.id,
                                channel.value)
        log.info("conversation %s %s on %s (%s)", record.id, "resumed" if resumed else "started", channel,
                 turn.party.level.name.lower())
        return Opened(record.id, resumed, actions, session_id=sid)

    async def handle(self, conversation_id: str, event: Event, *, session_id: str = "") -> list[Action]:
        # the page's or the desktop's own id for a typed message: kept once (each side its own ids)
        message_id = (f"{'agent' if isinstance(event, AgentMessage) else 'customer'}:{event.message_id}"
                      if isinstance(event, (ChatMessage, AgentMessage)) and event.message_id else "")
        async with self._lock(conversation_id):
            logged: list[LoggedEvent] = []
            for attempt in (1, 2):
                record = await self.store.get(conversation_id)
                if record is None:
                    raise UnknownConversation(f"no conversation {conversation_id!r}")
                channel = Channel.of(event.channel)
                if Handoff.of(record).seen(message_id):
                    log.info("conversation %s: %s %s already kept; not again", conversation_id, event.kind,
                             message_id)
                    return []
                if attempt == 1:
                    logged.append(await self.store.append(conversation_id, channel=channel, kind=event.kind,
                                                          payload=self._event_payload(record, event)))
                if channel not in record.channels and not channel.is_staff:
                    record.channels.append(channel)
                now = self.clock()
                ledger = Ledger(record)
                turn = Turn(record, channel, ledger.party(session_id, channel, now), now, logged=list(logged),
                            can_place_calls=self._places_calls)
                key = f"{conversation_id}|{session_id}"
                turn.keyed = self._keyed.get(key, "")
                ledger.touch(session_id)
                await self.engine.handle(turn, event)
                if message_id:
                    Handoff.of(record).remember(message_id).save(record)
                self._keep_keyed(key, turn.keyed)
                try:
                    return await self._finish(turn)
                except ConcurrentUpdate:
                    if attempt == 2:
                        raise
                    log.warning("conversation %s changed on another node; handling %s again",
                                conversation_id, event.kind)
        return []

    async def log_turn_timing(self, conversation_id: str, timing: Mapping[str, Any]) -> None:
        """Keep where one voice turn's time went (``TurnTiming``: kinds and milliseconds, no words)
        in the conversation's event log, beside the turn's own events."""
        await self.store.append(conversation_id, channel=Channel.VOICE, kind="TurnTiming", payload=dict(timing))

    async def context(self, conversation_id: str) -> dict[str, Any]:
        record = await self.store.get(conversation_id)
        if record is None:
            raise UnknownConversation(f"no conversation {conversation_id!r}")
        events = await self.store.events(conversation_id)
        return build_context(record, events[-TRANSCRIPT_LIMIT:], now=self.clock(),
                             locked_until=await self._locked_until(record))

    # ------------------------------------------------------------------ internals
    async def _proofs_at_open(self, turn: Turn, *, claim: str, callback: str, attestation: str, link_proof: str,
                              event: Event | None) -> None:
        """Grant the new session what the way it arrived proves (docs/trust.md)."""
        record, ledger = turn.record, turn.ledger
        ttl = self.settings.trust.verified_minutes * 60
        if not (callback or link_proof or attestation or (isinstance(event, CallStarted) and event.outbound)):
            return
        phone = await self.engine.phone_on_file(record)
        if callback:
            taken = ledger.take_callback(callback, turn.now)
            if taken is None:
                log.warning("conversation %s: a call presented an unknown or used callback; treated as a claim",
                            record.id)
                turn.note("CallbackRefused", channel=turn.channel)
            else:
                number, carries = taken
                if carries >= Assurance.PHONE and phone and same_number(number, phone):
                    method = "carried" if carries >= Assurance.IDENTITY else "callback"
                    turn.party = ledger.grant(turn.party, carries, method, turn.now, ttl)
                turn.note("CallbackAnswered", channel=turn.channel, level=turn.party.level.name.lower())
        if link_proof == "phone" and phone:
            turn.party = ledger.grant(turn.party, Assurance.IDENTITY, "link", turn.now, ttl)
        if (attestation.upper() == "A" and self.settings.trust.stir_shaken == "possession" and phone
                and same_number(claim, phone)):
            turn.party = ledger.grant(turn.party, Assurance.PHONE, "attestation", turn.now, ttl)
        if (isinstance(event, CallStarted) and event.outbound and turn.channel is Channel.SMS and phone
                and same_number(claim, phone)):
            # the gateway's own reminder SMS to the number on file: its replies come from that
            # phone (or from a spoofer who never sees what the gateway sends back)
            turn.party = ledger.grant(turn.party, Assurance.PHONE, "outbound_sms", turn.now, ttl)
            ledger.offer_call(turn.party.session_id, phone, turn.now, SMS_REMINDER_OFFER_SECONDS)

    def _keep_keyed(self, key: str, keyed: str) -> None:
        self._keyed.pop(key, None)
        if keyed:
            if len(self._keyed) >= MAX_KEYED_BUFFERS:
                self._keyed.pop(next(iter(self._keyed)))
            self._keyed[key] = keyed

    async def _locked_until(self, record: ConversationRecord) -> float:
        """Until when identity checks are locked for this conversation's customer, or for the
        account someone tried in it (0.0: not locked)."""
        until = 0.0
        for customer_id in {record.customer_id, str(record.trust.get("locked_account", ""))} - {""}:
            try:
                until = max(until, await self.engine.services.counters.locked_until(f"verify:{customer_id}"))
            except StoreError as exc:
                log.warning("conversation %s: verification lock unknown: %s", record.id, exc)
        return until

    async def _customer_for(self, caller_id: str) -> str:
        """The CRM customer id a caller id claims, or "" (a failing CRM only costs the shortcut)."""
        try:
            customer = await self.engine.crm.find_customer_by_phone(caller_id)
        except Exception as exc:  # CrmTimeout/CrmError: identify later in the journey instead
            log.warning("caller id lookup failed: %s", exc)
            return ""
        return customer.id if customer is not None else ""

    def _event_payload(self, record: ConversationRecord, event: Event) -> dict[str, Any]:
        payload = _payload(event)
        step = self.engine.current_ask(record)
        if step is not None and step.sensitive and isinstance(event, (UserSaid, ChatMessage, DtmfPressed)):
            for key in ("text", "digit"):
                if key in payload:
                    payload[key] = MASK
        return payload

    async def _finish(self, turn: Turn) -> list[Action]:
        record, actions = turn.record, turn.out
        if any(isinstance(a, Transfer) for a in actions):
            events = await self.store.events(record.id)
            context = build_context(record, events, now=turn.now, session_id=turn.party.session_id,
                                    locked_until=await self._locked_until(record))
            actions = actions + [ScreenPop(conversation_id=record.id, context=context)]
        for note in turn.notes:
            turn.logged.append(await self.store.append(record.id, channel=Channel.SYSTEM, kind=note.kind,
                                                       payload=dict(note.payload)))
            if self.audit is not None and note.kind in AUDITED_NOTES:
                try:
                    await self.audit.write(actor="system", role="system", action=AUDITED_NOTES[note.kind],
                                           conversation_id=record.id, detail=dict(note.payload))
                except (StoreError, ValueError) as exc:  # the event log above holds it too
                    log.error("conversation %s: audit entry %s not written: %s", record.id, note.kind, exc)
        for action in actions:
            turn.logged.append(await self.store.append(record.id, channel=Channel.BOT, kind=action.kind,
                                                       payload=_action_payload(action)))
        await self.store.save(record)
        for observer in self._observers:
            try:
                await asyncio.wait_for(observer(record, list(turn.logged)), SINK_TIMEOUT_SECONDS)
            except Exception:  # a live view failing must not fail the conversation
                log.exception("conversation %s: observer failed", record.id)
        for action in actions:
            sinks = self._sinks.get(type(action), [])
            for sink in sinks[:1] if type(action) in ONE_SINK else sinks:
                try:
                    await asyncio.wait_for(sink(record.id, action), SINK_TIMEOUT_SECONDS)
                except Exception:  # one failing channel must not fail the conversation
                    log.exception("conversation %s: %s sink failed", record.id, action.kind)
        return actions


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def _assurance(record: ConversationRecord, now: float, session_id: str, locked_until: float) -> dict[str, Any]:
    ledger = Ledger(record)
    party: Party = ledger.party(session_id or ledger.last_session, "", now)
    return {
        "level": party.level.name.lower(),
        "method": party.grant.method if party.grant else "",
        "channel": party.grant.channel if party.grant else "",
        "at": _iso(party.grant.at) if party.grant else "",
        "sessions": ledger.sessions(now),
        "locked_until": _iso(locked_until) if locked_until else "",
    }


def build_context(record: ConversationRecord, events: list[Any], *, now: float | None = None, session_id: str = "",
                  locked_until: float = 0.0) -> dict[str, Any]:
    """The screen-pop: who, what the party on the channel proved, intent and slots, the
    cross-channel transcript. ``verified`` lists what the session handing over (by default the
    one that spoke last) holds now, not what some other session once proved."""
    now = time.time() if now is None else now
    customer_channels = [c for c in record.channels if Channel.of(c) is not Channel.BOT]
    slots = {k: v for k, v in record.slots.items() if k not in PRIVATE_SLOTS and not k.startswith("form_")}
    transcript = [line for line in (transcript_line(e) for e in events) if line]
    assurance = _assurance(record, now, session_id, locked_until)
    verified = {"identity": assurance["at"]} if assurance["level"] == "identity" else {}
    return {
        "conversation_id": record.id,
        "status": record.status,
        "customer": {
            "id": record.customer_id,
            "name": record.slots.get("customer_name", ""),
            "caller_id": record.caller_id,
            "phone_last4": record.slots.get("phone_last4", ""),
            "language": record.slots.get("customer_language", "en"),
        },
        "channels": customer_channels,
        "verified": verified,
        "assurance": assurance,
        "intent": record.state.intent,
        "journey": record.journey,
        "step": record.step,
        "slots": slots,
        "forms": list(record.state.forms),
        "frustration": round(record.state.frustration, 2),
        "transfer": record.state.transfer.as_json() if record.state.transfer else {},
        "handoff": Handoff.of(record).as_context(),
        "transcript": transcript,
        "suggested_next_steps": suggest_next_steps(record, verified=bool(verified), locked=bool(locked_until)),
        "updated_at": _iso(record.updated_at or time.time()),
    }
