"""The human side assembled: queue, dispatcher, live feed, agent work, supervision, chat feed.

``HumanSide.build(...)`` wires the parts to the web app's desktop, chat and core (the core's
observer feeds the live hub); ``add_routes`` adds ``/supervisor`` and its socket; ``start`` and
``close`` run and stop the background work (the fan-out listener, the dispatcher, the
supervisor refresh). Several nodes share all of it through the context store (the queue) and
the fan-out (the live feed, offers, presence).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.agents.desktop import AgentDesktop
from gateway.agents.dispatch import Dispatcher
from gateway.agents.live import LiveHub, VoiceDeliver, VoicePush
from gateway.agents.queue_store import QueueStore, open_queue
from gateway.agents.supervision import Supervision
from gateway.agents.work import AgentWork
from gateway.config import Settings
from gateway.context.audit import AuditLog
from gateway.context.fanout import Fanout
from gateway.context.store import ContextStore
from gateway.core.journeys import AskStep, load_journeys
from gateway.core.port import ConversationPort
from gateway.digital.chat import ChatChannel
from gateway.digital.chat_live import ChatLive
from gateway.metrics import Metrics


def journey_steps(settings: Settings) -> dict[str, list[str]]:
    """Journey -> the steps a hand-back or a steering may go to (the journey's questions first)."""
    journeys = load_journeys(settings.project_path(settings.journeys.directory))
    out: dict[str, list[str]] = {}
    for name, journey in sorted(journeys.journeys.items()):
        asks = [s.id for s in journey.steps if isinstance(s, AskStep)]
        first = journey.steps[0].id
        out[name] = asks + ([first] if first not in asks else [])
    return out


@dataclass
class HumanSide:
    queue: QueueStore
    hub: LiveHub
    dispatcher: Dispatcher
    work: AgentWork
    supervision: Supervision
    chat_live: ChatLive

    @classmethod
    def build(cls, settings: Settings, core: ConversationPort, store: ContextStore | None, fanout: Fanout,
              desktop: AgentDesktop, chat: ChatChannel, audit: AuditLog, metrics: Metrics,
              static_dir: Path) -> "HumanSide":
        queue = open_queue(settings)
        hub = LiveHub(fanout)
        core.observe(hub.observe)
        dispatcher = Dispatcher(settings, queue, desktop.registry, core, hub, audit, metrics)
        core.register_queue_probe(dispatcher.wait_estimate)  # how long a chat would wait for an agent
        work = AgentWork(settings, core, queue, desktop.reader, hub, dispatcher, metrics)
        desktop.dispatcher, desktop.work, desktop.core = dispatcher, work, core
        dispatcher.desks = work.desks = desktop
        chat_live = ChatLive(chat, hub, store)
        chat.live = chat_live
        chat_live.opened_listeners.append(dispatcher.customer_opened)
        journeys = journey_steps(settings)
        desktop.journeys = journeys
        supervision = Supervision(settings, desktop.auth, core, store, queue, desktop.reader, hub, desktop,
                                  static_dir, journeys)
        for listener in (chat_live, work, supervision, dispatcher):
            hub.add(listener)
        return cls(queue, hub, dispatcher, work, supervision, chat_live)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/supervisor", self.supervision.page)
        app.router.add_get("/supervisor/ws", self.supervision.socket)

    def voice(self, deliver: VoiceDeliver) -> None:
        """Calls on this node hear at once what a person decided for them elsewhere."""
        self.hub.add(VoicePush(deliver))

    async def start(self) -> None:
        await self.hub.start()
        self.dispatcher.start()
        self.supervision.start()

    async def close(self) -> None:
        await self.supervision.close()
        await self.dispatcher.close()
        await self.hub.close()
        await self.queue.close()
