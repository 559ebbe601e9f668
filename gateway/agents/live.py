"""Live conversations across nodes: every turn, typing, delivery receipts, queue positions.

The core calls :meth:`LiveHub.observe` after every turn it saves (``core.observe``). The hub
publishes one message per turn on the ``live`` fan-out channel; every node's hub hands each
message to its local listeners (the chat, the agent desktops, the supervisor pages, the voice
sessions), which keep what concerns the conversations they serve. A turn message carries:

- ``summary``: what the supervisor list shows (channel, journey step, waiting since,
  frustration, who holds it), never what was said;
- ``lines``: the turn's transcript lines (redacted, as logged, each with its ``seq``);
- ``pushed``: when a person caused the turn (an agent's message, a hand-back, a steering), the
  actions for the customer, as logged, each with its ``seq``: the node holding the customer's
  chat or call carries them out. They stay in the log, so a chat that was away replays what it
  missed (``seq`` after the last it saw) and nothing typed is lost.

Small signals ride the same channel: ``typing``, ``delivered`` (a message reached the other
side's screen), ``queue_status`` (a waiting customer's place), ``whisper`` (a supervisor's note
to an agent). Delivery is at most once, like the fan-out; what must not be lost is in the log.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from gateway.context.fanout import Fanout, listen
from gateway.context.store import ConversationRecord, LoggedEvent, StoreError
from gateway.core.actions import Action, action_from_log
from gateway.core.handoff import Handoff
from gateway.core.transcript import transcript_line
from gateway.core.channels import STAFF_CHANNELS

log = logging.getLogger(__name__)

CHANNEL = "live"
PUSHED_BY = frozenset({"agent", "supervisor"})
"""Turns caused by these channels' events are carried out for the customer by the node holding them."""
MAX_LINE_CHARS = 4000
"""A line longer than this is cut in the live message (the log keeps it whole)."""
MAX_PENDING = 10_000
"""Turn messages waiting for the fan-out at most: turns never wait for it (a slow Redis costs
live views, not conversations); past this the oldest are dropped, with a log line."""


class LiveListener(Protocol):
    async def on_live(self, message: dict[str, Any]) -> None: ...


def customer_channels(record: ConversationRecord) -> list[str]:
    return [c for c in record.channels if c not in STAFF_CHANNELS]


def summary(record: ConversationRecord) -> dict[str, Any]:
    """One row of the supervisor's list: where the conversation stands, not what was said."""
    handoff = Handoff.of(record)
    transfer = record.state.transfer
    channels = customer_channels(record)
    return {"conversation_id": record.id, "status": record.status, "channels": channels,
            "channel": handoff.channel or (channels[-1] if channels else ""), "journey": record.journey,
            "step": record.step, "intent": record.state.intent,
            "frustration": round(record.state.frustration, 2),
            "customer": str(record.slots.get("customer_name", "") or record.customer_id),
            "queue": transfer.queue if transfer else "", "waiting": handoff.waiting,
            "waiting_since": handoff.since if handoff.waiting else 0.0, "agent": handoff.agent,
            "choice": handoff.choice, "started_at": record.created_at, "updated_at": record.updated_at}


def pushed_actions(events: list[LoggedEvent]) -> list[LoggedEvent]:
    """The actions (bot entries) of turns a person caused, from a stretch of the log in order: a
    turn starts at each entry of a non-bot, non-system channel; its actions follow it."""
    out, pushed = [], False
    for event in events:
        if event.channel == "bot":
            if pushed:
                out.append(event)
        elif event.channel != "system":
            pushed = event.channel in PUSHED_BY
    return out


def turn_message(record: ConversationRecord, events: list[LoggedEvent], node: str) -> dict[str, Any]:
    """The live message of one turn."""
    lines = []
    for event in events:
        line = transcript_line(event)
        if line is not None:
            line["text"] = str(line.get("text", ""))[:MAX_LINE_CHARS]
            lines.append(line)
    pushed = [{"seq": e.seq, "kind": e.kind, "payload": e.payload} for e in pushed_actions(events)]
    return {"type": "turn", "node": node, "conversation_id": record.id, "summary": summary(record),
            "lines": lines, "pushed": pushed}


@dataclass
class _Stats:
    published: int = 0
    failed: int = 0
    dropped: int = 0


class LiveHub:
    """Publishes turns and signals on the fan-out; hands what arrives to this node's listeners."""

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout
        self.node = secrets.token_hex(4)
        self._listeners: list[LiveListener] = []
        self._task: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_PENDING)
        self.stats = _Stats()

    def add(self, listener: LiveListener) -> None:
        self._listeners.append(listener)

    async def observe(self, record: ConversationRecord, events: list[LoggedEvent]) -> None:
        """The core's observer: one live message per saved turn, sent in order by the hub's own
        task (the turn does not wait for the fan-out)."""
        message = turn_message(record, events, self.node)
        if self._sender is None:
            await self.publish(message)
            return
        if self._pending.full():
            self._pending.get_nowait()
            self.stats.dropped += 1
            log.warning("live feed behind by %d turns; the oldest dropped (the log keeps it)", MAX_PENDING)
        self._pending.put_nowait(message)

    async def _send(self) -> None:
        while True:
            await self.publish(await self._pending.get())

    async def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every node (this one included); without the fan-out, to this node."""
        try:
            await self._fanout.publish(CHANNEL, message)
            self.stats.published += 1
        except (StoreError, ValueError) as exc:
            self.stats.failed += 1
            log.warning("live %s of conversation %s not fanned out (%s); this node only", message.get("type"),
                        message.get("conversation_id", "-"), exc)
            await self._dispatch(message)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                await listener.on_live(message)
            except (ConnectionError, RuntimeError, KeyError, TypeError, ValueError, StoreError) as exc:
                log.warning("live %s of conversation %s not handled by %s: %s", message.get("type"),
                            message.get("conversation_id", "-"), type(listener).__name__, exc)

    async def start(self) -> None:
        ready = asyncio.Event()
        listener = listen(self._fanout, CHANNEL, self._dispatch, ready, what="live conversations",
                          handler_errors=(KeyError, TypeError, ValueError))
        self._task = asyncio.create_task(listener, name="live-hub")
        self._sender = asyncio.create_task(self._send(), name="live-hub-send")
        await ready.wait()

    async def close(self) -> None:
        for task in (self._sender, self._task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._sender = None


VoiceDeliver = Callable[[str, list[Action]], Awaitable[bool]]
"""Hands actions to the call of a conversation on this node; False when no call here has it."""


class VoicePush:
    """Carries out, on the node holding a call, what a person decided for it elsewhere (a
    supervisor's take-over or steering): the call hears it at once."""

    def __init__(self, deliver: VoiceDeliver) -> None:
        self._deliver = deliver

    async def on_live(self, message: dict[str, Any]) -> None:
        if message.get("type") != "turn" or not message.get("pushed"):
            return
        actions = [a for a in (action_from_log(str(p.get("kind", "")), p.get("payload") or {})
                               for p in message["pushed"]) if a is not None]
        if actions and await self._deliver(str(message.get("conversation_id", "")), actions):
            log.info("conversation %s: %d actions carried out on its call here", message.get("conversation_id"),
                     len(actions))
