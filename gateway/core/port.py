"""The conversation core as the channels see it.

Every channel depends on this small interface only, never on the engine behind it. A channel
opens (or resumes) a conversation, feeds it events, and carries out the actions it gets back.
Actions that belong to another channel (an SMS follow-up during a call, a screen-pop on
transfer, an outbound call after a chat) are also delivered to the sink registered for that
action type, so the owning channel carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from gateway.context.store import ConversationRecord, LoggedEvent
from gateway.core.actions import Action
from gateway.core.events import Event

if TYPE_CHECKING:
    from gateway.context.callbacks import Callbacks
    from gateway.core.queue_wait import QueueProbe

ActionSink = Callable[[str, Action], Awaitable[None]]
"""Called with (conversation_id, action) for actions a channel registered to carry out."""

Observer = Callable[[ConversationRecord, list[LoggedEvent]], Awaitable[None]]
"""Called after every turn is saved with the conversation and what the turn logged (live views)."""


@dataclass(frozen=True)
class Opened:
    """The result of opening a conversation on a channel."""

    conversation_id: str
    resumed: bool
    actions: list[Action] = field(default_factory=list)
    session_id: str = ""
    """This channel session's id: pass it with every event of the session. What the session
    proves (a check passed, a callback answered) is bound to it, not to the conversation."""


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
        session_id: str = "",
        callback: str = "",
        attestation: str = "",
        link_proof: str = "",
    ) -> Opened:
        """Start a conversation, or resume the customer's recent one (found by caller id,
        customer id or an explicit conversation id: claims, which bring back the journey's place
        but no verification). ``event`` (CallStarted, ChatStarted) is logged and answered; the
        greeting or the resumed step's prompt is in ``actions``.

        Proofs a channel can present (docs/trust.md): ``session_id`` of an earlier session of
        this conversation that the channel holds under its own signature (a chat cookie);
        ``callback``, the nonce of an ``Originate`` the core issued, for the call it placed;
        ``attestation``, the STIR/SHAKEN level the PBX verified; ``link_proof="phone"`` for a
        signed link that was sent to the phone on file."""
        ...

    async def handle(self, conversation_id: str, event: Event, *, session_id: str = "") -> list[Action]:
        """Feed one event of the session ``session_id``; returns the actions for the channel
        that sent it. An event without a session id is treated as from an unproven party."""
        ...

    async def context(self, conversation_id: str) -> dict[str, Any]:
        """The screen-pop context: customer, verified facts, intent, slots, redacted transcript."""
        ...

    @property
    def scheduled_callbacks(self) -> "Callbacks | None":
        """The callbacks customers booked instead of waiting (None when the core keeps none)."""
        ...

    def register_queue_probe(self, probe: "QueueProbe") -> None:
        """Have the core read ``probe`` (``gateway.core.queue_wait.QueueProbe``) before it offers
        a person: a long expected wait offers a callback or a text instead."""
        ...

    def register_sink(self, action_type: type[Action], sink: ActionSink) -> None:
        """Have ``sink`` carry out every action of ``action_type`` the core emits."""
        ...

    def observe(self, observer: Observer) -> None:
        """Have ``observer`` see every turn once it is saved: the conversation as it stands and
        the log entries the turn wrote (redacted). For live views: never for decisions."""
        ...
