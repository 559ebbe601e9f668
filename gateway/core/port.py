"""The conversation core as the channels see it.

Every channel depends on this small interface only, never on the engine behind it. A channel
opens (or resumes) a conversation, feeds it events, and carries out the actions it gets back.
Actions that belong to another channel (an SMS follow-up during a call, a screen-pop on
transfer, an outbound call after a chat) are also delivered to the sink registered for that
action type, so the owning channel carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from gateway.core.actions import Action
from gateway.core.events import Event

ActionSink = Callable[[str, Action], Awaitable[None]]
"""Called with (conversation_id, action) for actions a channel registered to carry out."""


@dataclass(frozen=True)
class Opened:
    """The result of opening a conversation on a channel."""

    conversation_id: str
    resumed: bool
    actions: list[Action] = field(default_factory=list)


class ConversationPort(Protocol):
    async def open(
        self,
        channel: str,
        *,
        caller_id: str = "",
        customer_id: str = "",
        conversation_id: str = "",
        journey: str = "",
        event: Event | None = None,
    ) -> Opened:
        """Start a conversation, or resume the customer's recent one (found by caller id,
        customer id or an explicit conversation id). ``event`` (CallStarted, ChatStarted) is
        logged and answered; the greeting or the resumed step's prompt is in ``actions``."""
        ...

    async def handle(self, conversation_id: str, event: Event) -> list[Action]:
        """Feed one event; returns the actions for the channel that sent it."""
        ...

    async def context(self, conversation_id: str) -> dict[str, Any]:
        """The screen-pop context: customer, verified facts, intent, slots, redacted transcript."""
        ...

    def register_sink(self, action_type: type[Action], sink: ActionSink) -> None:
        """Have ``sink`` carry out every action of ``action_type`` the core emits."""
        ...
