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
from typing import Any

from gateway.config import Settings
from gateway.context.store import ConcurrentUpdate, ContextStore, ConversationRecord
from gateway.core.actions import Action, ScreenPop, Transfer
from gateway.core.dialog import DialogEngine
from gateway.core.events import DtmfPressed, Event, UserSaid, ChatMessage
from gateway.core.port import ActionSink, Opened
from gateway.core.suggestions import suggest_next_steps

log = logging.getLogger(__name__)

SINK_TIMEOUT_SECONDS = 10.0
TRANSCRIPT_LIMIT = 500
PRIVATE_SLOTS = {"secret", "account_number", "customer_phone"}


class UnknownConversation(KeyError):
    """An event named a conversation the store does not hold."""


def _payload(obj: Any) -> dict[str, Any]:
    data = dataclasses.asdict(obj)
    if "expect" in data and isinstance(data["expect"], dict):
        data["expect"] = {k: v for k, v in data["expect"].items() if v not in ((), 0, False, "")}
    return data


class Orchestrator:
    """Implements ``gateway.core.port.ConversationPort`` over a store and a dialog engine."""

    def __init__(self, settings: Settings, store: ContextStore, engine: DialogEngine):
        self.settings = settings
        self.store = store
        self.engine = engine
        self._sinks: dict[type[Action], list[ActionSink]] = defaultdict(list)
        self._locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        """Close the store and the Rasa client (if any)."""
        rasa = getattr(self.engine, "rasa", None)
        if rasa is not None:
            await rasa.close()
        await self.store.close()

    def register_sink(self, action_type: type[Action], sink: ActionSink) -> None:
        self._sinks[action_type].append(sink)

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
                   journey: str = "", event: Event | None = None) -> Opened:
        record: ConversationRecord | None = None
        if caller_id and not customer_id:
            customer_id = await self._customer_for(caller_id)
        if conversation_id:
            record = await self.store.get(conversation_id)
            if record is None:
                log.info("conversation %s not found; starting a new one", conversation_id)
        if record is None and (customer_id or caller_id) and not journey:
            record = await self.store.find_recent(
                customer_id=customer_id, caller_id=caller_id,
                within_seconds=self.settings.context.resume_window_minutes * 60)
            if record is not None and record.status == "closed":
                record = None
        resumed = record is not None and bool(record.step)
        if record is None:
            record = await self.store.create(caller_id=caller_id, customer_id=customer_id, channel=channel)
        async with self._lock(record.id):
            record = await self.store.get(record.id) or record
            if channel not in record.channels:
                record.channels.append(channel)
            if caller_id and not record.caller_id:
                record.caller_id = caller_id
            if customer_id and not record.customer_id:
                record.customer_id = customer_id
            if event is not None:
                await self.store.append(record.id, channel=channel, kind=event.kind, payload=_payload(event))
            outbound = bool(getattr(event, "outbound", False))
            if resumed and record.status == "transferred":
                record.status = "active"
            actions = await self.engine.start(record, channel, resumed=resumed, journey=journey, outbound=outbound)
            actions = await self._finish(record, channel, actions)
        log.info("conversation %s %s on %s", record.id, "resumed" if resumed else "started", channel)
        return Opened(record.id, resumed, actions)

    async def handle(self, conversation_id: str, event: Event) -> list[Action]:
        async with self._lock(conversation_id):
            for attempt in (1, 2):
                record = await self.store.get(conversation_id)
                if record is None:
                    raise UnknownConversation(f"no conversation {conversation_id!r}")
                channel = getattr(event, "channel", "") or "unknown"
                if attempt == 1:
                    await self.store.append(conversation_id, channel=channel, kind=event.kind,
                                            payload=self._event_payload(record, event))
                if channel not in record.channels:
                    record.channels.append(channel)
                actions = await self.engine.handle(record, event, channel)
                try:
                    return await self._finish(record, channel, actions)
                except ConcurrentUpdate:
                    if attempt == 2:
                        raise
                    log.warning("conversation %s changed on another node; handling %s again",
                                conversation_id, event.kind)
        return []

    async def context(self, conversation_id: str) -> dict[str, Any]:
        record = await self.store.get(conversation_id)
        if record is None:
            raise UnknownConversation(f"no conversation {conversation_id!r}")
        events = await self.store.events(conversation_id)
        return build_context(record, events[-TRANSCRIPT_LIMIT:])

    # ------------------------------------------------------------------ internals
    async def _customer_for(self, caller_id: str) -> str:
        """The CRM customer id of a caller id, or "" (a failing CRM only costs the shortcut)."""
        try:
            customer = await self.engine.crm.find_customer_by_phone(caller_id)
        except Exception as exc:  # CrmTimeout/CrmError: identify later in the journey instead
            log.warning("caller id lookup failed: %s", exc)
            return ""
        return customer.id if customer is not None else ""

    def _event_payload(self, record: ConversationRecord, event: Event) -> dict[str, Any]:
        payload = _payload(event)
        step = self.engine._current_step(record)
        if step is not None and step.sensitive and isinstance(event, (UserSaid, ChatMessage, DtmfPressed)):
            for key in ("text", "digit"):
                if key in payload:
                    payload[key] = "[redacted]"
        return payload

    async def _finish(self, record: ConversationRecord, channel: str, actions: list[Action]) -> list[Action]:
        if any(isinstance(a, Transfer) for a in actions):
            events = await self.store.events(record.id)
            actions = actions + [ScreenPop(conversation_id=record.id, context=build_context(record, events))]
        for action in actions:
            await self.store.append(record.id, channel="bot", kind=action.kind,
                                    payload=_payload(action) if not isinstance(action, ScreenPop) else
                                    {"conversation_id": record.id})
        await self.store.save(record)
        for action in actions:
            for sink in self._sinks.get(type(action), ()):
                try:
                    await asyncio.wait_for(sink(record.id, action), SINK_TIMEOUT_SECONDS)
                except Exception:  # one failing channel must not fail the conversation
                    log.exception("conversation %s: %s sink failed", record.id, action.kind)
        return actions


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def _transcript_line(event: Any) -> dict[str, Any] | None:
    payload = event.payload
    who = "bot" if event.channel == "bot" else "customer"
    text = payload.get("text") or ""
    if event.kind == "DtmfPressed":
        text = f"[DTMF {payload.get('digit', '')}]"
    elif event.kind in ("CallStarted", "ChatStarted", "ChannelClosed", "LinkOpened", "FormSubmitted",
                        "CallAccepted", "AgentConnected"):
        who, text = "system", event.kind + (f" ({payload.get('reason') or payload.get('purpose') or ''})"
                                            if payload.get("reason") or payload.get("purpose") else "")
    elif event.kind in ("Transfer", "SendFollowUp", "Originate", "Hangup", "OfferCall"):
        who = "system"
        detail = payload.get("queue") or payload.get("template") or payload.get("reason") or payload.get("text") or ""
        text = f"{event.kind}: {detail}" if detail else event.kind
    if not text:
        return None
    return {"at": _iso(event.at), "channel": event.channel, "who": who, "kind": event.kind, "text": text}


def build_context(record: ConversationRecord, events: list[Any]) -> dict[str, Any]:
    """The screen-pop: who, what is verified, intent and slots, the cross-channel transcript."""
    customer_channels = [c for c in record.channels if c != "bot"]
    slots = {k: v for k, v in record.slots.items() if k not in PRIVATE_SLOTS and not k.startswith("form_")}
    transcript = [line for line in (_transcript_line(e) for e in events) if line]
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
        "verified": {fact: _iso(at) for fact, at in record.verified.items()},
        "intent": record.state.get("intent", ""),
        "journey": record.journey,
        "step": record.step,
        "slots": slots,
        "forms": record.state.get("forms", []),
        "frustration": round(float(record.state.get("frustration", 0.0)), 2),
        "transfer": record.state.get("transfer", {}),
        "transcript": transcript,
        "suggested_next_steps": suggest_next_steps(record),
        "updated_at": _iso(record.updated_at or time.time()),
    }
