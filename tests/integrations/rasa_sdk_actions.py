"""Custom actions loaded by a real rasa-sdk action server in the Rasa client tests
(``python -m rasa_sdk --actions tests.integrations.rasa_sdk_actions``)."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher


class ActionGreetCustomer(Action):
    """Reads slots and the latest message the way a team's own action would."""

    def name(self) -> str:
        return "action_greet_customer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        name = tracker.get_slot("customer_name") or "there"
        intent = (tracker.latest_message.get("intent") or {}).get("name", "none")
        dispatcher.utter_message(text=f"Hello {name}, you said: {tracker.latest_message.get('text', '')}")
        return [SlotSet("greeted", True), SlotSet("seen_intent", intent), SlotSet("sender", tracker.sender_id),
                SlotSet("outcome", "greeted")]


class ActionAlwaysBroken(Action):
    def name(self) -> str:
        return "action_always_broken"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        raise RuntimeError("this action is broken on purpose")
