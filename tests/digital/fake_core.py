"""A small scripted ConversationPort for the digital channel tests.

It behaves like the real orchestrator where the channels can tell: conversations resume by id,
events and actions are logged into a transcript, actions are returned to the caller *and*
delivered to registered sinks, Transfer is followed by ScreenPop, unknown ids raise KeyError.
The script: "verify" asks a sensitive PIN (1234 verifies), "call me" offers a call, "agent"
transfers (skills billing), "link" asks for a document upload follow-up.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from gateway.core.actions import (Action, Ask, Expect, OfferCall, Originate, Say, ScreenPop, SendFollowUp,
                                  Transfer)
from gateway.core.events import (CallAccepted, ChatMessage, Event, FormSubmitted, LinkOpened)
from gateway.core.port import ActionSink, Opened

PHONE = "+15550001111"


class FakeCore:
    """Scripted conversation core (see module docstring)."""

    def __init__(self) -> None:
        self.conversations: dict[str, dict[str, Any]] = {}
        self.sinks: dict[type[Action], list[ActionSink]] = defaultdict(list)
        self.events: list[tuple[str, Event]] = []

    def register_queue_probe(self, probe: object) -> None:
        """No queue is read here."""

    def register_sink(self, action_type: type[Action], sink: ActionSink) -> None:
        self.sinks[action_type].append(sink)

    def observe(self, observer: object) -> None:
        """Live views are not fed by this fake."""

    def _log(self, cid: str, channel: str, who: str, kind: str, text: str) -> None:
        self.conversations[cid]["transcript"].append(
            {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "channel": channel, "who": who,
             "kind": kind, "text": text})

    async def open(self, channel: str, *, caller_id: str = "", customer_id: str = "", conversation_id: str = "",
                   journey: str = "", event: Event | None = None, session_id: str = "", callback: str = "",
                   attestation: str = "", link_proof: str = "") -> Opened:
        resumed = conversation_id in self.conversations
        if not resumed:
            for cid, conv in self.conversations.items():
                if caller_id and conv["caller_id"] == caller_id and not journey:
                    conversation_id, resumed = cid, True
                    break
        if not resumed:
            conversation_id = str(uuid.uuid4())
            self.conversations[conversation_id] = {
                "caller_id": caller_id, "customer_id": customer_id, "channels": [], "verified": {},
                "intent": "", "slots": {"customer_phone": caller_id or PHONE}, "transcript": [], "step": "start",
                "name": "Dana Example", "forms": []}
        conv = self.conversations[conversation_id]
        if channel not in conv["channels"]:
            conv["channels"].append(channel)
        if event is not None:
            self.events.append((conversation_id, event))
            self._log(conversation_id, channel, "system", event.kind, event.kind)
        if resumed:
            actions: list[Action] = [Say("Welcome back."), self._prompt(conv)]
        else:
            actions = [Say("Welcome."), self._prompt(conv)]
        return Opened(conversation_id, resumed, await self._finish(conversation_id, actions),
                      session_id=session_id or uuid.uuid4().hex)

    def _prompt(self, conv: dict[str, Any]) -> Ask:
        if conv["step"] == "pin":
            return Ask("What is your PIN?", expect=Expect(kind="digits", min_digits=4, max_digits=4, sensitive=True))
        return Ask("How can I help?", expect=Expect(kind="open"))

    async def handle(self, conversation_id: str, event: Event, *, session_id: str = "") -> list[Action]:
        if conversation_id not in self.conversations:
            raise KeyError(conversation_id)
        conv = self.conversations[conversation_id]
        channel = getattr(event, "channel", "unknown")
        self.events.append((conversation_id, event))
        out: list[Action] = []
        if isinstance(event, ChatMessage):
            text = event.text.strip().lower()
            self._log(conversation_id, channel, "customer", "ChatMessage",
                      "[redacted]" if conv["step"] == "pin" else event.text)
            if conv["step"] == "pin":
                if text == "1234":
                    conv["verified"]["identity"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                    conv["step"] = "start"
                    out += [Say("Thanks, you're verified."), self._prompt(conv)]
                else:
                    out.append(Ask("That PIN did not match. Try again.", expect=Expect(kind="digits", sensitive=True)))
            elif "verify" in text:
                conv["step"] = "pin"
                conv["intent"] = "billing_dispute"
                out.append(self._prompt(conv))
            elif "call" in text:
                out.append(OfferCall(text="Would you like us to call you now?", number=conv["slots"]["customer_phone"]))
            elif "agent" in text:
                out += [Say("Connecting you."), Transfer(queue="support", skills=("billing",), language="en",
                                                         conversation_id=conversation_id)]
            elif "link" in text:
                target = "chat" if channel == "chat" else "sms"
                out += [SendFollowUp(channel=target, template="upload_document", text="Upload your document:",
                                     to=conv["slots"]["customer_phone"], link_purpose="upload_document",
                                     conversation_id=conversation_id), Say("I've sent you a link.")]
            else:
                out.append(Say(f"You said: {event.text[:50]}"))
        elif isinstance(event, CallAccepted):
            self._log(conversation_id, channel, "system", "CallAccepted", "CallAccepted")
            number = event.number or conv["slots"]["customer_phone"]
            out += [Say(f"Calling you now at {number}."), Originate(number=number, conversation_id=conversation_id)]
        elif isinstance(event, LinkOpened):
            self._log(conversation_id, channel, "system", "LinkOpened", f"LinkOpened ({event.purpose})")
        elif isinstance(event, FormSubmitted):
            self._log(conversation_id, channel, "system", "FormSubmitted", f"FormSubmitted ({event.purpose})")
            conv["forms"].append(event.purpose)
            conv["slots"][f"form_{event.purpose}"] = dict(event.fields)
            out.append(Say(f"Thanks, we've received your {event.purpose.replace('_', ' ')}."))
        else:
            self._log(conversation_id, channel, "system", event.kind, event.kind)
        return await self._finish(conversation_id, out)

    async def _finish(self, cid: str, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, (Say, Ask)):
                self._log(cid, "bot", "bot", action.kind, action.text)
        if any(isinstance(a, Transfer) for a in actions):
            actions = actions + [ScreenPop(conversation_id=cid, context=await self.context(cid))]
        for action in actions:
            for sink in self.sinks.get(type(action), ()):
                await sink(cid, action)
        return actions

    async def context(self, conversation_id: str) -> dict[str, Any]:
        if conversation_id not in self.conversations:
            raise KeyError(conversation_id)
        conv = self.conversations[conversation_id]
        return {
            "conversation_id": conversation_id,
            "customer": {"id": conv["customer_id"], "name": conv["name"], "caller_id": conv["caller_id"],
                         "language": "en"},
            "channels": list(conv["channels"]),
            "verified": dict(conv["verified"]),
            "intent": conv["intent"],
            "slots": {k: v for k, v in conv["slots"].items() if not k.startswith("form_")},
            "forms": list(conv["forms"]),
            "transcript": list(conv["transcript"]),
            "suggested_next_steps": ["Identity already verified: do not ask again"] if conv["verified"]
            else ["Verify the customer's identity"],
        }
