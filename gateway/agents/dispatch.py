"""The queue at work on one node: offers, lapsed offers, dropped agents, queue views, positions.

Every node runs a :class:`Dispatcher`; each looks at the shared queue every
``agents.dispatch_seconds`` (and at once when something changed here), and what it changes it
changes through the queue's atomic transitions, so nodes never contradict each other:

- **offers**: the longest-waiting chat is offered first, to the best available agent the
  registry knows (any node) whom :func:`~gateway.agents.access.authorize` lets take it, who
  holds fewer than ``agents.max_chats`` and has no other offer open. The offer is a screen-pop
  (through the fan-out, to whichever node holds that agent's desktop); not accepted within
  ``agents.offer_seconds`` it goes to the next agent;
- **leases**: the node holding an agent's desktop renews their conversations' leases; a lease
  not renewed for ``agents.reconnect_grace_seconds`` (the desktop dropped and did not come back,
  or its node died) puts the conversation back in the queue, first in line, and the customer is
  told (``AgentDropped``);
- **views**: each desktop on this node gets the queue it may take from when it changes;
- **positions**: each waiting customer gets their place in their queue and the typical wait.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from gateway.agents import queue as q
from gateway.agents.access import ConversationFacts, Permission, authorize
from gateway.agents.accounts import Principal
from gateway.agents.live import LiveHub
from gateway.agents.queue import QueueEntry, clip
from gateway.agents.queue_store import QueueStore
from gateway.agents.registry import AgentRegistry
from gateway.config import Settings
from gateway.context.audit import AuditLog
from gateway.context.store import StoreError
from gateway.core.events import AgentDropped
from gateway.core.port import ConversationPort
from gateway.core.queue_wait import WaitEstimate, queue_wait_estimate
from gateway.metrics import Metrics
from gateway.periodic import Periodic

log = logging.getLogger(__name__)

MAX_VIEW_ENTRIES = 200
"""Entries one desktop's queue view lists at most (the longest waiting)."""
MAX_VOICE_WAIT_SECONDS = 3600.0
"""A call still waiting in the PBX's queue after this long was abandoned there: its entry goes."""


class Dispatcher:
    """Keeps the shared queue moving, for the agents and customers this node serves."""

    def __init__(self, settings: Settings, queue: QueueStore, registry: AgentRegistry, core: ConversationPort,
                 hub: LiveHub, audit: AuditLog, metrics: Metrics, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.queue = queue
        self.registry = registry
        self._core = core
        self._hub = hub
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self.desks: Any = None
        """The agent desktop of this node (set by it): ``local_agents()``, ``principal_of()``,
        ``send(agent, frame)``, ``offer(conversation_id, agent, offer)``, ``holding(agent, cids)``."""
        self._ticker = Periodic("agent queue", self.tick, lambda: self.settings.agents.dispatch_seconds,
                                expected=(StoreError, ConnectionError, LookupError, ValueError, TypeError),
                                wait_first=True)
        self._views: dict[str, str] = {}
        self._positions: dict[str, tuple[int, int, str]] = {}
        metrics.gauge("voicegw_queue_waiting", lambda: float(self.waiting))
        self.waiting = 0

    # ------------------------------------------------------------------ outside events
    async def enqueue(self, entry: QueueEntry) -> None:
        """A transfer arrived: put it in the queue and dispatch now."""
        await self.queue.apply(entry.conversation_id, q.enqueue(entry))
        if not entry.voice and not self.registry.candidates(entry.queue, entry.skills, entry.language):
            self._metrics.inc("voicegw_screenpops_unrouted_total")
            log.warning("conversation %s waits in queue %s: nobody available (skills %s, language %s)",
                        entry.conversation_id, entry.queue or "-", ",".join(entry.skills) or "-", entry.language or "-")
        await self.changed()

    async def changed(self) -> None:
        """Something in the queue changed here: every node looks again now."""
        self.kick()
        await self._hub.publish({"type": "queue_changed", "node": self._hub.node})

    def kick(self) -> None:
        self._ticker.kick()

    async def on_live(self, message: dict[str, Any]) -> None:
        if message.get("type") == "queue_changed" and message.get("node") != self._hub.node:
            self.kick()
        elif message.get("type") == "turn" and message.get("node") == self._hub.node:
            row = message.get("summary") or {}
            if row.get("status") == "closed":  # closed by the bot or a supervisor while queued
                cid = str(message.get("conversation_id", ""))
                entry = await self.queue.get(cid)
                if entry is not None and not entry.taken and (await self.queue.apply(cid, q.remove())).ok:
                    await self.changed()  # (one an agent holds leaves with their disposition)
            elif row.get("waiting") and row.get("choice"):  # the customer chose a message or a callback
                done = await self.queue.apply(str(message.get("conversation_id", "")),
                                              q.choose_mode(str(row["choice"])))
                if done.ok:
                    await self.changed()

    async def customer_opened(self, conversation_id: str) -> None:
        """A waiting customer's chat (re)opened here: tell them their place again."""
        self._positions.pop(conversation_id, None)
        self.kick()

    # ------------------------------------------------------------------ the tick
    async def tick(self) -> None:
        now = self._clock()
        entries = await self.queue.entries()
        entries = await self._leases(entries, now)
        entries = await self._lapsed_offers(entries, now)
        entries = await self._offers(entries, now)
        self.waiting = sum(1 for e in entries if not e.taken)
        await self._views_and_holding(entries, now)
        await self._tell_positions(entries)

    async def _leases(self, entries: list[QueueEntry], now: float) -> list[QueueEntry]:
        grace = self.settings.agents.reconnect_grace_seconds
        local = self.desks.local_agents() if self.desks is not None else set()
        out = []
        for entry in entries:
            if entry.voice:
                # a call an agent answered stays theirs whatever their desktop does (the PBX bridged
                # it); one never answered within the hour was abandoned in the PBX's queue
                if not entry.taken and now - entry.since > MAX_VOICE_WAIT_SECONDS:
                    await self.queue.apply(entry.conversation_id, q.remove())
                    continue
            elif entry.taken and entry.taken_by in local and entry.lease_until - now < grace / 2:
                done = await self.queue.apply(entry.conversation_id, q.renew(entry.taken_by, now + grace))
                entry = done.entry or entry
            elif entry.taken and entry.lease_until <= now:
                done = await self.queue.apply(entry.conversation_id, q.release_lapsed(now))
                if done.ok:
                    await self._dropped(entry)
                    entry = await self.queue.get(entry.conversation_id) or entry
            out.append(entry)
        return out

    async def _dropped(self, entry: QueueEntry) -> None:
        agent = entry.taken_by
        log.warning("conversation %s back in queue %s: agent %s's desktop gone for over %.0f s",
                    entry.conversation_id, entry.queue, agent, self.settings.agents.reconnect_grace_seconds)
        self._metrics.inc("voicegw_queue_requeued_total")
        try:
            await self._audit.write(actor="system", role="system", action="requeued",
                                    conversation_id=entry.conversation_id,
                                    detail={"agent": agent, "reason": "desktop gone past the grace period"})
        except StoreError as exc:
            log.error("conversation %s: requeue not audited: %s", entry.conversation_id, exc)
        if not entry.voice:
            try:
                await self._core.handle(entry.conversation_id, AgentDropped(agent_id=agent))
            except LookupError:
                await self.queue.apply(entry.conversation_id, q.remove())

    async def _lapsed_offers(self, entries: list[QueueEntry], now: float) -> list[QueueEntry]:
        out = []
        for entry in entries:
            if entry.offered_to and entry.offer_until <= now and not entry.taken:
                done = await self.queue.apply(entry.conversation_id, q.lapse(entry.offered_to, now))
                if done.ok:
                    log.info("conversation %s: offer to %s lapsed; offering the next agent", entry.conversation_id,
                             entry.offered_to)
                entry = done.entry or entry
            out.append(entry)
        return out

    async def wait_estimate(self, queue: str, family: str) -> WaitEstimate | None:
        """The core's queue probe for chats (gateway.core.queue_wait): customers waiting in
        ``queue``, agents who may take it and have room, the queue's typical recent wait. With
        nobody waiting and no history, None: the wait is not guessed."""
        if family != "chat":
            return None
        now = time.time()
        entries = await self.queue.entries()
        waiting = sum(1 for e in entries if e.queue == queue and not e.taken and not e.voice)
        typical = (await self.queue.waits(queue)).typical()
        if not waiting and typical is None:
            return None
        agents = self.registry.candidates(queue)
        load = self._load(entries, now)
        free = sum(1 for a in agents if load.get(a.agent_id, 0) < self.settings.agents.max_chats)
        return WaitEstimate(queue, queue_wait_estimate(waiting, len(agents), free, typical), waiting, free, "desktop")

    def _load(self, entries: list[QueueEntry], now: float) -> dict[str, int]:
        """Chats each agent holds or has on offer now."""
        load: dict[str, int] = {}
        for entry in entries:
            for agent in {entry.taken_by, entry.offered_to if entry.offered(now) else ""} - {""}:
                load[agent] = load.get(agent, 0) + 1
        return load

    async def _offers(self, entries: list[QueueEntry], now: float) -> list[QueueEntry]:
        load = self._load(entries, now)
        offering = {e.offered_to for e in entries if e.offered(now)}
        until = now + self.settings.agents.offer_seconds
        out = []
        for entry in entries:
            if entry.taken or entry.voice or entry.offered(now):
                out.append(entry)
                continue
            ranked = [a for a in self.registry.candidates(entry.queue, entry.skills, entry.language)
                      if load.get(a.agent_id, 0) < self.settings.agents.max_chats]
            fresh = [a for a in ranked if a.agent_id not in entry.declined and a.agent_id not in offering]
            if not fresh and ranked and all(a.agent_id in entry.declined for a in ranked):
                done = await self.queue.apply(entry.conversation_id, q.forgive())
                entry = done.entry or entry
                fresh = [a for a in ranked if a.agent_id not in offering]
            for agent in fresh:
                done = await self.queue.apply(entry.conversation_id, q.offer(agent.agent_id, now, until))
                if done.ok and done.entry is not None:
                    entry = done.entry
                    offering.add(agent.agent_id)
                    load[agent.agent_id] = load.get(agent.agent_id, 0) + 1
                    self.registry.picked(agent.agent_id)
                    if self.desks is not None:
                        await self.desks.offer(entry.conversation_id, agent.agent_id,
                                               {"until": until, "seconds": self.settings.agents.offer_seconds,
                                                "queue": entry.queue})
                    break
                if done.why in ("taken", "offered", "gone"):
                    entry = done.entry or entry
                    break
            out.append(entry)
        return out

    def visible(self, principal: Principal, entry: QueueEntry) -> bool:
        """An entry ``principal`` may see in their queue view (and take)."""
        if entry.taken_by == principal.name:
            return True
        return bool(authorize(principal, Permission.TAKE_CONVERSATION,
                              ConversationFacts(entry.conversation_id, entry.queue)))

    def view(self, principal: Principal, entries: list[QueueEntry], now: float) -> list[dict[str, Any]]:
        return [e.as_json(now) for e in entries if self.visible(principal, e)][:MAX_VIEW_ENTRIES]

    async def _show(self, principal: Principal, entries: list[QueueEntry], now: float, *, always: bool) -> None:
        view = self.view(principal, entries, now)
        key = repr([(v["conversation_id"], v["state"], v["taken_by"], v["mode"], v["offered_to"]) for v in view])
        if always or self._views.get(principal.name) != key:
            self._views[principal.name] = key
            await self.desks.send(principal.name, {"type": "queue", "entries": view})

    async def _views_and_holding(self, entries: list[QueueEntry], now: float) -> None:
        if self.desks is None:
            return
        for agent in self.desks.local_agents():
            principal = self.desks.principal_of(agent)
            if principal is None:
                continue
            await self._show(principal, entries, now, always=False)
            await self.desks.holding(agent, {e.conversation_id for e in entries if e.taken_by == agent})
        for agent in set(self._views) - self.desks.local_agents():
            del self._views[agent]

    async def show_queue(self, principal: Principal) -> None:
        """A desktop (re)connected: the queue it may take from, now (the agent who signs in after
        a transfer sees it at once, and is offered it on the next round)."""
        if self.desks is not None:
            await self._show(principal, await self.queue.entries(), self._clock(), always=True)
        self.kick()

    async def _tell_positions(self, entries: list[QueueEntry]) -> None:
        ahead: dict[str, int] = {}
        typical: dict[str, float | None] = {}
        waiting: set[str] = set()
        for entry in entries:  # longest waiting first
            if entry.taken or entry.voice:
                continue
            ahead[entry.queue] = ahead.get(entry.queue, 0) + 1
            position = ahead[entry.queue]
            waiting.add(entry.conversation_id)
            if entry.queue not in typical:
                typical[entry.queue] = (await self.queue.waits(entry.queue)).typical()
            seconds = typical[entry.queue]
            wait = int(seconds) if seconds is not None else -1
            if self._positions.get(entry.conversation_id) != (position, wait, entry.mode):
                self._positions[entry.conversation_id] = (position, wait, entry.mode)
                await self._hub.publish({"type": "queue_status", "conversation_id": entry.conversation_id,
                                         "position": position, "wait_seconds": wait, "queue": clip(entry.queue),
                                         "mode": entry.mode})
        for cid in set(self._positions) - waiting:
            del self._positions[cid]

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        self._ticker.start()

    async def close(self) -> None:
        await self._ticker.close()
