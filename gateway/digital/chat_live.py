"""The customer's chat while people have the conversation: agent messages, typing, receipts,
the queue, and what was missed while the page was away.

A listener on the live feed (:mod:`gateway.agents.live`): for every conversation with a chat
open on *this* node it turns what a person caused (an agent's message, the agent joining or
leaving, the bot's question after a hand-back) into chat frames, each with its ``seq`` in the
conversation's log; the agent's typing into ``typing``; the agent's desktop showing a message
into ``seen``; the dispatcher's place in line into ``queue``. When a chat (re)opens with
``?since=N`` it gets what it missed from the log itself, so a dropped socket, a reload or a
node restart loses nothing an agent typed; the page drops frames whose ``seq`` it already has.

It also sends the agent, through the feed, that an agent message reached the customer's screen
(``delivered``) and that the customer is typing (at most once a second per conversation, and
only while an agent holds it).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from gateway.agents.live import LiveHub, pushed_actions
from gateway.context.store import ContextStore
from gateway.core.actions import AgentJoined, AgentLeft, AgentSay, Hangup, action_from_log
from gateway.core.handoff import Handoff
from gateway.digital.chat_protocol import QUEUE_CHOICES, dumps, encode_action

log = logging.getLogger(__name__)

REPLAY_EVENTS = 500
"""Log entries looked at when a chat reopens (a long agent conversation is a few hundred)."""
TYPING_SECONDS = 1.0
MAX_TRACKED = 10_000


class ChatLive:
    """Feeds the chats of this node with what people do."""

    def __init__(self, chat: Any, hub: LiveHub, store: ContextStore | None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._chat = chat
        self._hub = hub
        self._store = store
        self._clock = clock
        self._with_agent: set[str] = set()
        self._typing: dict[str, float] = {}
        self.opened_listeners: list[Callable[[str], Awaitable[None]]] = []
        """Called with the conversation id when a chat opens here (the dispatcher re-tells its place)."""

    # ------------------------------------------------------------------ frames
    def _frame(self, seq: int, kind: str, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
        action = action_from_log(kind, payload)
        if action is None:
            return None, None
        frame = encode_action(action)
        if frame is not None:
            frame["seq"] = seq
        return frame, action

    def _track(self, cid: str, action: Any) -> None:
        if isinstance(action, AgentJoined):
            self._with_agent.add(cid)
            if len(self._with_agent) > MAX_TRACKED:
                self._with_agent.clear()
        elif isinstance(action, (AgentLeft, Hangup)):
            self._with_agent.discard(cid)

    async def on_live(self, message: dict[str, Any]) -> None:
        cid = str(message.get("conversation_id", ""))
        if not self._chat.is_open(cid):
            return
        kind = message.get("type")
        if kind == "turn":
            for pushed in message.get("pushed", []):
                frame, action = self._frame(int(pushed.get("seq", 0)), str(pushed.get("kind", "")),
                                            pushed.get("payload") or {})
                if frame is None:
                    continue
                self._track(cid, action)
                sent = await self._chat.send_now(cid, frame)
                if sent and isinstance(action, AgentSay) and action.message_id:
                    await self._hub.publish({"type": "delivered", "conversation_id": cid, "to": "agent",
                                             "message_id": action.message_id})
        elif kind == "typing" and message.get("who") == "agent":
            await self._chat.send_now(cid, {"type": "typing", "name": str(message.get("name", ""))})
        elif kind == "delivered" and message.get("to") == "customer":
            await self._chat.send_now(cid, {"type": "seen", "id": str(message.get("message_id", ""))})
        elif kind == "queue_status":
            choices = [] if message.get("mode") else list(QUEUE_CHOICES)
            await self._chat.send_now(cid, {"type": "queue", "position": int(message.get("position", 0)),
                                            "wait_seconds": int(message.get("wait_seconds", -1)),
                                            "mode": str(message.get("mode", "")), "choices": choices})

    # ------------------------------------------------------------------ a chat opening
    async def opened(self, cid: str, ws: web.WebSocketResponse, since: int) -> None:
        """A chat of ``cid`` opened here: send what people sent since ``seq`` ``since`` (with no
        ``since``: since the conversation was handed to people, while they still have it)."""
        if self._store is not None:
            try:
                await self._replay(cid, ws, since)
            except Exception as exc:  # noqa: BLE001 - a failed replay must not cost the chat; the log keeps it
                log.warning("chat conversation %s: replay after reopening failed: %s", cid, exc)
        for listener in list(self.opened_listeners):
            await listener(cid)

    async def _replay(self, cid: str, ws: web.WebSocketResponse, since: int) -> None:
        assert self._store is not None
        record = await self._store.get(cid)
        if record is None:
            return
        handoff = Handoff.of(record)
        if handoff.agent:
            self._with_agent.add(cid)
        if since <= 0 and not handoff.engaged:
            return
        events = await self._store.events(cid, limit=REPLAY_EVENTS)
        replayed = 0
        for event in pushed_actions(events):
            if (since > 0 and event.seq <= since) or (since <= 0 and event.at < handoff.since):
                continue
            frame, action = self._frame(event.seq, event.kind, event.payload)
            if frame is None:
                continue
            self._track(cid, action)
            await ws.send_str(dumps(frame))
            replayed += 1
        if replayed:
            log.info("chat conversation %s: %d frames replayed after seq %d", cid, replayed, since)

    async def customer_typing(self, cid: str) -> None:
        """The customer is typing: the agent holding the chat sees it (a second apart at most)."""
        if cid not in self._with_agent:
            return
        now = self._clock()
        if now - self._typing.get(cid, 0.0) < TYPING_SECONDS:
            return
        self._typing[cid] = now
        if len(self._typing) > MAX_TRACKED:
            self._typing.clear()
        await self._hub.publish({"type": "typing", "conversation_id": cid, "who": "customer"})
