"""Chat pushes across gateway nodes, through the context store's fan-out.

A follow-up for a chat (``SendFollowUp(channel="chat")``) is carried out on the node where the
core emitted it, but the customer's chat socket may be open on another node. The relay sends
the frame to local sockets first; otherwise it keeps the frame (so a chat reopening here still
gets it) and publishes it on the ``chat`` fan-out channel. The node holding the socket delivers
it and answers ``delivered``, and the origin drops its kept copy, so the customer sees the
message once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from gateway.context.fanout import Fanout, listen
from gateway.context.store import StoreError
from gateway.digital.chat import ChatChannel

log = logging.getLogger(__name__)

CHANNEL = "chat"


class ChatRelay:
    """Delivers chat frames to whichever node holds the conversation's chat."""

    def __init__(self, chat: ChatChannel, fanout: Fanout) -> None:
        self._chat = chat
        self._fanout = fanout
        self.node = secrets.token_hex(4)
        self._task: asyncio.Task[None] | None = None

    async def deliver(self, conversation_id: str, frame: dict[str, Any]) -> bool:
        """True when a chat on this node took the frame; else it is kept and relayed."""
        if await self._chat.send_now(conversation_id, frame):
            return True
        frame_id = secrets.token_hex(8)
        self._chat.keep(conversation_id, frame, frame_id)
        try:
            await self._fanout.publish(CHANNEL, {"type": "push", "id": frame_id, "node": self.node,
                                                 "conversation_id": conversation_id, "frame": frame})
        except (StoreError, ValueError) as exc:
            log.warning("chat relay for conversation %s failed: %s; kept on this node", conversation_id, exc)
        return False

    async def _on_message(self, message: dict[str, Any]) -> None:
        cid = str(message.get("conversation_id", ""))
        if message.get("node") == self.node:
            return
        if message.get("type") == "push" and isinstance(message.get("frame"), dict):
            if await self._chat.send_now(cid, message["frame"]):
                log.info("chat frame for conversation %s relayed from node %s", cid, message.get("node"))
                await self._fanout.publish(CHANNEL, {"type": "delivered", "id": message.get("id"),
                                                     "node": self.node, "conversation_id": cid})
        elif message.get("type") == "delivered":
            self._chat.forget(cid, str(message.get("id", "")))

    async def start(self) -> None:
        """Listen for frames relayed by other nodes."""
        ready = asyncio.Event()
        listener = listen(self._fanout, CHANNEL, self._on_message, ready, what="chat relay",
                          handler_errors=(StoreError, ConnectionError, TypeError, ValueError))
        self._task = asyncio.create_task(listener, name="chat-relay")
        await ready.wait()

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
