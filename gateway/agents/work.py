"""What an agent does from the desktop: accept from the queue, chat, follow up, hand back, close.

Every command is decided here, in the same order: who the agent is (their account, never the
desktop's word), whether :func:`~gateway.agents.access.authorize` lets them take that
conversation, whether the queue's record says they hold it (an agent types only into a
conversation they took), then the core (a staff event: never the customer's answer), then the
audit log for what changes who has the conversation. Refusals are clear and name who holds it
("bob took this conversation 4 s ago").

The customer sees what the core decided through the live feed (:mod:`gateway.agents.live`),
on whichever node holds their chat. This class is also the desktops' listener on that feed:
the lines of the conversations an agent holds, the customer typing, delivery receipts, a
supervisor's whisper.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from gateway.agents import queue as q
from gateway.agents.access import ConversationFacts, Permission, Via, authorize
from gateway.agents.accounts import Principal
from gateway.agents.desk_protocol import Accept, Close, Decline, DeskCommand, FollowUp, GiveBack, Send, Typing
from gateway.agents.dispatch import Dispatcher
from gateway.agents.live import LiveHub
from gateway.agents.queue_store import QueueStore
from gateway.agents.reads import ConversationReader, ReadRefused
from gateway.config import Settings
from gateway.context.store import StoreError
from gateway.core.actions import Action, AgentLeft, StaffNotice
from gateway.core.events import AgentConnected, AgentFollowUp, AgentMessage, Disposition, HandBack
from gateway.core.port import ConversationPort
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

TYPING_SECONDS = 1.0
"""At most one typing signal per conversation and agent this often (the other side shows it for a few seconds)."""


def notices(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, StaffNotice)]


class AgentWork:
    """Carries out desktop commands and feeds the desktops of this node."""

    def __init__(self, settings: Settings, core: ConversationPort, queue: QueueStore, reader: ConversationReader,
                 hub: LiveHub, dispatcher: Dispatcher, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._core = core
        self.queue = queue
        self.reader = reader
        self._hub = hub
        self.dispatcher = dispatcher
        self._metrics = metrics
        self._clock = clock
        self.desks: Any = None
        """The agent desktop of this node: ``send(agent, frame)``, ``principal_of(agent)``."""
        self._holding: dict[str, set[str]] = {}
        self._typing: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ replies
    async def _send(self, agent: str, frame: dict[str, Any]) -> None:
        if self.desks is not None:
            await self.desks.send(agent, frame)

    async def _refuse(self, agent: str, cid: str, message: str, **extra: Any) -> None:
        await self._send(agent, {"type": "refused", "conversation_id": cid, "message": message, **extra})

    async def _audit(self, principal: Principal, action: str, cid: str, **detail: Any) -> None:
        try:
            await self.reader.audit.write(actor=principal.name, role=principal.role.value, action=action,
                                          conversation_id=cid, detail={k: str(v) for k, v in detail.items()})
        except StoreError as exc:
            log.error("conversation %s: %s by %s not audited: %s", cid, action, principal.name, exc)

    # ------------------------------------------------------------------ desktops coming and going
    async def connected(self, principal: Principal, address: str) -> None:
        """A desktop (re)connected: what the agent holds comes back, transcript and all."""
        now = self._clock()
        grace = self.settings.agents.reconnect_grace_seconds
        for entry in await self.queue.entries():
            if entry.taken_by == principal.name:
                await self.queue.apply(entry.conversation_id, q.renew(principal.name, now + grace))
                await self._activate(principal, entry.conversation_id, address)
        await self.dispatcher.show_queue(principal)

    async def _activate(self, principal: Principal, cid: str, address: str = "") -> None:
        """Show ``principal`` the conversation they now hold: its whole context (a read, audited)."""
        self._holding.setdefault(principal.name, set()).add(cid)
        try:
            context = await self.reader.read(principal, cid, via=Via.PAGE, address=address)
        except (LookupError, ReadRefused, StoreError) as exc:
            log.warning("conversation %s not shown to %s: %s", cid, principal.name, exc)
            return
        await self._send(principal.name, {"type": "active", "conversation_id": cid, "context": context,
                                          "dispositions": list(self.settings.agents.dispositions)})

    def shown(self, agent: str, cid: str) -> None:
        """``agent``'s desktop here got ``cid``'s screen-pop as theirs (a take-over, an answered call)."""
        self._holding.setdefault(agent, set()).add(cid)

    async def holding(self, agent: str, cids: set[str]) -> None:
        """The queue says ``agent`` holds ``cids`` (the dispatcher's view): show what is new
        (a take-over, a call answered), release what is gone (closed, taken from them)."""
        before = self._holding.get(agent, set())
        principal = self.desks.principal_of(agent) if self.desks is not None else None
        for cid in before - cids:
            entry = await self.queue.get(cid)
            if entry is not None and entry.taken_by == agent:
                cids = cids | {cid}  # taken after the dispatcher read the queue
                continue
            await self._send(agent, {"type": "released", "conversation_id": cid,
                                     "reason": f"now with {entry.taken_by}" if entry and entry.taken_by else "gone"})
        self._holding[agent] = set(before & cids)
        for cid in cids - before:
            if principal is not None:
                await self._activate(principal, cid)

    async def _holds(self, principal: Principal, cid: str) -> bool:
        """True when the queue says ``principal`` holds ``cid``; otherwise they are told who does."""
        entry = await self.queue.get(cid)
        if entry is not None and entry.taken_by == principal.name:
            return True
        who = f"{entry.taken_by} holds it" if entry and entry.taken_by else "it is not in your hands (accept it first)"
        await self._refuse(principal.name, cid, f"You cannot act in this conversation: {who}.")
        return False

    # ------------------------------------------------------------------ commands
    async def command(self, principal: Principal, command: DeskCommand, address: str) -> None:
        if isinstance(command, Accept):
            await self.accept(principal, command.conversation_id, address)
        elif isinstance(command, Decline):
            await self.queue.apply(command.conversation_id, q.lapse(principal.name, self._clock()))
            await self.dispatcher.changed()
        elif isinstance(command, Send):
            await self.say(principal, command)
        elif isinstance(command, Typing):
            await self.typing(principal, command.conversation_id)
        elif isinstance(command, FollowUp):
            if await self._holds(principal, command.conversation_id):
                actions = await self._core.handle(command.conversation_id, AgentFollowUp(
                    agent_id=principal.name, via=command.via, purpose=command.purpose))
                await self._audit(principal, "follow_up", command.conversation_id, via=command.via,
                                  purpose=command.purpose)
                for text in notices(actions):
                    await self._send(principal.name, {"type": "notice", "conversation_id": command.conversation_id,
                                                      "text": text})
        elif isinstance(command, GiveBack):
            await self.hand_back(principal, command)
        elif isinstance(command, Close):
            await self.close(principal, command)

    async def accept(self, principal: Principal, cid: str, address: str) -> None:
        agent = principal.name
        entry = await self.queue.get(cid)
        if entry is None:
            await self._refuse(agent, cid, "This conversation is no longer waiting in the queue.", code="gone")
            return
        facts = ConversationFacts(cid, entry.queue, await self.reader.assignments.agents_for(cid))
        decision = authorize(principal, Permission.TAKE_CONVERSATION, facts)
        if not decision:
            await self._audit(principal, "accept_refused", cid, reason=decision.reason)
            await self._refuse(agent, cid, decision.reason, code="forbidden")
            return
        entries = await self.queue.entries()
        held = sum(1 for e in entries if e.taken_by == agent and e.conversation_id != cid and not e.voice)
        if held >= self.settings.agents.max_chats and not entry.voice:
            await self._refuse(agent, cid, f"You already hold {held} chats, the most at once; close or hand one "
                                           "back first.", code="busy")
            return
        now = self._clock()
        done = await self.queue.apply(cid, q.claim(agent, now, now + self.settings.agents.reconnect_grace_seconds))
        if not done.ok:
            holder = done.entry.taken_by if done.entry else ""
            ago = now - done.entry.taken_at if done.entry else 0.0
            message = (f"{holder} already took this conversation {ago:.0f} s ago." if holder
                       else "This conversation is no longer waiting in the queue.")
            self._metrics.inc("voicegw_queue_accept_refused_total", reason=done.why or "gone")
            await self._audit(principal, "accept_refused", cid, reason=message)
            await self._refuse(agent, cid, message, code="taken", holder=holder)
            return
        if entry.taken_by != agent:
            await self.queue.record_wait(entry.queue, now - entry.since)
            await self.reader.assign(cid, agent, how="accepted")
            await self._audit(principal, "accepted", cid, queue=entry.queue, waited=f"{now - entry.since:.0f}")
            self._metrics.inc("voicegw_queue_accepted_total")
            await self._core.handle(cid, AgentConnected(agent_id=agent, name=agent))
        await self._activate(principal, cid, address)
        await self.dispatcher.changed()

    async def say(self, principal: Principal, command: Send) -> None:
        cid = command.conversation_id
        if not await self._holds(principal, cid):
            await self._send(principal.name, {"type": "unsent", "conversation_id": cid, "id": command.message_id})
            return
        actions = await self._core.handle(cid, AgentMessage(agent_id=principal.name, text=command.text,
                                                           message_id=command.message_id))
        refused = notices(actions)
        if refused:
            await self._refuse(principal.name, cid, refused[0])
            await self._send(principal.name, {"type": "unsent", "conversation_id": cid, "id": command.message_id})
            return
        self._metrics.inc("voicegw_agent_messages_total")
        await self._send(principal.name, {"type": "sent", "conversation_id": cid, "id": command.message_id})

    async def typing(self, principal: Principal, cid: str) -> None:
        if cid not in self._holding.get(principal.name, set()):
            return
        now = self._clock()
        key = (principal.name, cid)
        if now - self._typing.get(key, 0.0) < TYPING_SECONDS:
            return
        self._typing[key] = now
        if len(self._typing) > 10_000:
            self._typing.clear()
        await self._hub.publish({"type": "typing", "conversation_id": cid, "who": "agent", "name": principal.name})

    async def _release(self, principal: Principal, cid: str, reason: str) -> None:
        self._holding.get(principal.name, set()).discard(cid)  # first: a dispatcher round now sees nothing to release
        await self.queue.apply(cid, q.remove(holder=principal.name))
        await self._send(principal.name, {"type": "released", "conversation_id": cid, "reason": reason})
        await self.dispatcher.changed()

    async def hand_back(self, principal: Principal, command: GiveBack) -> None:
        cid = command.conversation_id
        if not await self._holds(principal, cid):
            return
        actions = await self._core.handle(cid, HandBack(agent_id=principal.name, journey=command.journey,
                                                        step=command.step))
        if not any(isinstance(a, AgentLeft) for a in actions):
            await self._refuse(principal.name, cid, (notices(actions) or ["The bot could not take it back."])[0])
            return
        await self._audit(principal, "handed_back", cid, journey=command.journey, step=command.step)
        await self._release(principal, cid, "handed_back")

    async def close(self, principal: Principal, command: Close) -> None:
        cid = command.conversation_id
        codes = self.settings.agents.dispositions
        if command.code not in codes:
            await self._refuse(principal.name, cid, f"The disposition must be one of: {', '.join(codes)}.")
            return
        if not await self._holds(principal, cid):
            return
        actions = await self._core.handle(cid, Disposition(agent_id=principal.name, code=command.code,
                                                           notes=command.notes))
        refused = notices(actions)
        if refused:
            await self._refuse(principal.name, cid, refused[0])
            return
        await self._audit(principal, "closed", cid, code=command.code)
        self._metrics.inc("voicegw_dispositions_total", code=command.code)
        await self._release(principal, cid, "closed")

    # ------------------------------------------------------------------ the live feed, for desktops
    def _holders(self, cid: str) -> list[str]:
        return [agent for agent, cids in self._holding.items() if cid in cids]

    async def on_live(self, message: dict[str, Any]) -> None:
        kind, cid = message.get("type"), str(message.get("conversation_id", ""))
        if kind == "whisper":
            agent = str(message.get("agent", ""))
            if self.desks is not None and agent in self.desks.local_agents():
                await self._send(agent, {"type": "whisper", "conversation_id": cid,
                                         "from": message.get("from", ""), "text": message.get("text", "")})
            return
        holders = self._holders(cid)
        if not holders:
            return
        if kind == "turn":
            for agent in holders:
                await self._send(agent, {"type": "lines", "conversation_id": cid, "lines": message.get("lines", []),
                                         "summary": message.get("summary", {})})
            for line in message.get("lines", []):
                if line.get("who") == "customer" and line.get("message_id"):
                    await self._hub.publish({"type": "delivered", "conversation_id": cid, "to": "customer",
                                             "message_id": line["message_id"]})
        elif kind == "typing" and message.get("who") == "customer":
            for agent in holders:
                await self._send(agent, {"type": "typing", "conversation_id": cid})
        elif kind == "delivered" and message.get("to") == "agent":
            for agent in holders:
                await self._send(agent, {"type": "delivered", "conversation_id": cid,
                                         "id": message.get("message_id", "")})
