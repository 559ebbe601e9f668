"""The agent desktop: its page, presence over WebSocket, and screen-pops.

- ``GET /agent``: the desktop page for a signed-in person (session cookie, see
  :mod:`gateway.agents.signin`); anyone else gets the sign-in form (401). A ``?token=`` in the
  URL is not accepted.
- ``GET /agent/ws``: the desktop's socket (session cookie, or ``Authorization: Bearer`` for a
  third-party desktop; a foreign Origin is refused). The desktop states skills and languages
  (``{"type": "ready", "skills": [...], "languages": [...], "available": true}``); role and
  queues come from the account. Its other frames (accept, send, typing, follow-up, hand back,
  close: :mod:`gateway.agents.desk_protocol`) are carried out by :mod:`gateway.agents.work`.
  It receives the queue it may take from (``queue``), offers and screen-pops (``screen_pop``
  with ``offer`` or ``state``), the conversations it holds (``active``, then ``lines``),
  ``typing``, ``delivered``, ``whisper``, ``released`` and clear ``refused`` answers.

Routing: a Transfer puts the conversation in the shared queue (:mod:`gateway.agents.queue`);
the dispatcher offers it to the best available person whom
:func:`~gateway.agents.access.authorize` lets take it, and fans the offer out on
``screenpop``. The node holding that agent's socket reads the context through
:class:`~gateway.agents.reads.ConversationReader` (authorized and audited) and delivers it. A
supervisor's take-over names the agent, who gets it at once. For calls, AMI says whose phone
rings (``agent_called``: a screen-pop before they answer) and who answered
(``agent_connected``: theirs, recorded in the shared assignments).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from gateway.agents import queue as q
from gateway.agents.access import Via
from gateway.agents.accounts import AccountBook, Principal, Role
from gateway.agents.desk_protocol import DeskProtocolError, Ready, Send, Typing, parse_desk_frame
from gateway.agents.dispatch import Dispatcher
from gateway.agents.queue import QueueEntry, clip
from gateway.agents.reads import ConversationReader, ReadRefused
from gateway.agents.registry import AgentRegistry
from gateway.agents.signin import DeskAuth, client_address, same_origin
from gateway.agents.work import AgentWork
from gateway.config import Settings
from gateway.context.fanout import Fanout, listen
from gateway.context.store import StoreError
from gateway.core.actions import Action, ScreenPop, Transfer
from gateway.core.events import AgentConnected
from gateway.limits import TokenBuckets
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024
"""Largest desktop frame: an agent message of ``chat.max_message_chars`` in UTF-8 with its envelope."""
PRESENCE, SCREENPOP = "agents", "screenpop"
MAX_BAD_FRAMES = 5
"""Malformed frames a desktop may send before its socket is closed."""
MAX_ROUTING = 10_000
"""Transfers remembered between the Transfer and its ScreenPop (the oldest are forgotten)."""
COMMANDS_PER_MINUTE = 120
"""Desktop actions (messages, accepts, follow-ups...) one agent may send a minute, a minute's
worth at once: a person types a message every few seconds; a stolen token scripting a flood
of messages into customers' chats is held to this (typing signals are throttled apart)."""


@dataclass(frozen=True)
class DeskSocket:
    """One open desktop socket: whose, signed in with which token hash, until when, from where."""

    ws: web.WebSocketResponse
    agent: str
    fingerprint: str
    until: float
    address: str


class AgentDesktop:
    """Serves agent desktops and carries out ScreenPop for them."""

    def __init__(self, settings: Settings, auth: DeskAuth, reader: ConversationReader, fanout: Fanout,
                 metrics: Metrics, static_dir: Any) -> None:
        self._settings = settings
        self.auth = auth
        self.book: AccountBook = auth.book
        self.reader = reader
        self._fanout = fanout
        self._metrics = metrics
        self._static_dir = static_dir
        self.node = secrets.token_hex(4)
        self.registry = AgentRegistry()
        self._sockets: dict[str, set[DeskSocket]] = {}
        self._routing: dict[str, Transfer] = {}
        self.dispatcher: Dispatcher | None = None
        self.work: AgentWork | None = None
        self.core: Any = None
        """The conversation core (told which agent answered a call)."""
        self._commands = TokenBuckets(COMMANDS_PER_MINUTE, clock=time.monotonic)
        self.journeys: dict[str, list[str]] = {}
        """Journey -> steps an agent may hand back to (shown on the desktop)."""
        self._tasks: list[asyncio.Task[None]] = []
        metrics.gauge("voicegw_agents_online", lambda: float(len(self._sockets)))

    # ------------------------------------------------------------------ the page
    async def desk(self, request: web.Request) -> web.StreamResponse:
        """GET /agent."""
        principal = self.auth.session(request)
        if principal is None:
            message = "Sign in with your agent token to open the desktop."
            if "token" in request.query:
                message = "Tokens in links are not accepted any more. " + message
                log.warning("agent desktop: a token in the URL refused from %s", client_address(request))
            return self.auth.sign_in_page(401, message)
        return web.FileResponse(self._static_dir / "agent.html",
                                headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    # ------------------------------------------------------------------ the desktop socket
    async def socket(self, request: web.Request) -> web.StreamResponse:
        """GET /agent/ws."""
        if "token" in request.query:
            return web.json_response({"error": "tokens in URLs are not accepted; sign in at /agent or send "
                                               "Authorization: Bearer <agent token>"}, status=400)
        attempt = await self.auth.principal(request)
        if attempt.principal is None:
            headers = {"Retry-After": str(int(attempt.retry_after) + 1)} if attempt.status == 429 else None
            return web.json_response({"error": attempt.message}, status=attempt.status, headers=headers)
        principal = attempt.principal
        if not same_origin(request, self._settings.web.public_url):
            log.warning("agent %s desktop socket refused: foreign origin %s", principal.name,
                        request.headers.get("Origin", ""))
            return web.json_response({"error": "foreign origin"}, status=403)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30.0)
        await ws.prepare(request)
        desk = DeskSocket(ws, principal.name, attempt.fingerprint, attempt.until, client_address(request))
        self._sockets.setdefault(principal.name, set()).add(desk)
        log.info("agent %s (%s) desktop connected from %s", principal.name, principal.role.value, desk.address)
        await ws.send_json({"type": "welcome", "agent_id": principal.name, "role": principal.role.value,
                            "queues": sorted(principal.queues), "dispositions": list(self._settings.agents.dispositions),
                            "journeys": self.journeys})
        if self.work is not None:
            await self.work.connected(principal, desk.address)
        bad = 0
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT or not self._still_signed_in(desk):
                    break
                try:
                    command = parse_desk_frame(msg.data, max_message_chars=self._settings.chat.max_message_chars)
                except DeskProtocolError as exc:
                    bad += 1
                    await ws.send_json({"type": "refused", "message": str(exc)})
                    if bad > MAX_BAD_FRAMES:
                        log.warning("agent %s desktop closed: too many bad frames", principal.name)
                        break
                    continue
                if not isinstance(command, Ready):
                    if not isinstance(command, Typing) and not self._commands.take(principal.name):
                        self._metrics.inc("voicegw_agent_commands_refused_total")
                        await ws.send_json({"type": "refused", "conversation_id": command.conversation_id,
                                            "message": f"too many actions: at most {COMMANDS_PER_MINUTE} a minute; "
                                                       "try again in a few seconds"})
                        if isinstance(command, Send):
                            await ws.send_json({"type": "unsent", "conversation_id": command.conversation_id,
                                                "id": command.message_id})
                        continue
                    if self.work is not None:
                        await self.work.command(principal, command, desk.address)
                    continue
                presence = self.registry.update(principal.name, node=self.node, skills=command.skills,
                                                languages=command.languages, available=command.available,
                                                role=principal.role, queues=principal.queues)
                await self._publish(PRESENCE, {"type": "presence", **presence.as_message()})
                await ws.send_json({"type": "ready", "skills": sorted(command.skills),
                                    "languages": sorted(command.languages), "available": command.available})
                if self.dispatcher is not None:
                    self.dispatcher.kick()
        finally:
            sockets = self._sockets.get(principal.name, set())
            sockets.discard(desk)
            if not sockets:
                self._sockets.pop(principal.name, None)
                self.registry.remove(principal.name)
                await self._publish(PRESENCE, {"type": "gone", "agent_id": principal.name, "node": self.node})
            log.info("agent %s desktop disconnected", principal.name)
        return ws

    def _still_signed_in(self, desk: DeskSocket) -> bool:
        """The account still exists with the same token and the sign-in has not expired."""
        account = self.book.get(desk.agent)
        return account is not None and account.fingerprint == desk.fingerprint and time.time() < desk.until

    # ------------------------------------------------------------------ what the dispatcher and the work use
    def local_agents(self) -> set[str]:
        """Agents with a desktop open on this node."""
        return set(self._sockets)

    def principal_of(self, agent: str) -> Principal | None:
        account = self.book.get(agent)
        return account.principal if account is not None else None

    async def send(self, agent: str, frame: dict[str, Any]) -> None:
        """``frame`` to every desktop ``agent`` has open on this node."""
        for desk in list(self._sockets.get(agent, ())):
            if desk.ws.closed:
                continue
            try:
                await desk.ws.send_json(frame)
            except ConnectionError as exc:
                log.info("agent %s desktop send failed: %s", agent, exc)

    async def holding(self, agent: str, cids: set[str]) -> None:
        if self.work is not None:
            await self.work.holding(agent, cids)

    async def offer(self, conversation_id: str, agent: str, offer: dict[str, Any]) -> None:
        """The dispatcher offers ``conversation_id`` to ``agent``: a screen-pop on their node."""
        await self._publish_pop({"conversation_id": conversation_id, "agent_id": agent, "offer": offer})

    # ------------------------------------------------------------------ screen-pops
    async def on_transfer(self, conversation_id: str, action: Action) -> None:
        """Sink for Transfer: remember the queue, skills, language (and a named agent) the next ScreenPop routes by."""
        if isinstance(action, Transfer):
            self._routing[action.conversation_id or conversation_id] = action
            while len(self._routing) > MAX_ROUTING:
                self._routing.pop(next(iter(self._routing)))

    async def on_screen_pop(self, conversation_id: str, action: Action) -> None:
        """Sink for ScreenPop: the conversation joins the queue (the dispatcher offers it); a
        take-over's named agent gets it at once."""
        if not isinstance(action, ScreenPop):
            return
        cid = action.conversation_id or conversation_id
        context = action.context
        customer = context.get("customer") or {}
        transfer = context.get("transfer") or {}
        routed = self._routing.pop(cid, None) or Transfer(
            queue=str(transfer.get("queue", "")) if isinstance(transfer, dict) else "",
            language=str(customer.get("language", "")) if isinstance(customer, dict) else "")
        entry = QueueEntry(conversation_id=cid, queue=routed.queue.strip().lower(), since=time.time(),
                           skills=tuple(routed.skills), language=routed.language,
                           channel=str(transfer.get("channel", "chat")) if isinstance(transfer, dict) else "chat",
                           reason=clip(routed.reason or (transfer.get("reason", "") if isinstance(transfer, dict)
                                                         else "")),
                           intent=clip(str(context.get("intent", ""))),
                           customer=clip(str(customer.get("name") or customer.get("id") or "")
                                         if isinstance(customer, dict) else ""))
        if self.dispatcher is None:
            return
        try:
            await self.dispatcher.enqueue(entry)
            if routed.agent:
                await self.assign_now(cid, routed.agent, how="taken over")
        except StoreError as exc:
            log.error("conversation %s not queued: %s", cid, exc)

    async def assign_now(self, conversation_id: str, agent: str, *, how: str, tell_core: bool = False) -> bool:
        """Give ``conversation_id`` to ``agent`` now (a take-over, a call they answered); with
        ``tell_core``, the core learns who holds it before their desktop shows it."""
        if self.dispatcher is None:
            return False
        now = time.time()
        done = await self.dispatcher.queue.apply(
            conversation_id, q.claim(agent, now, now + self._settings.agents.reconnect_grace_seconds))
        if not done.ok:
            log.warning("conversation %s not given to %s: %s holds it", conversation_id, agent,
                        done.entry.taken_by if done.entry else "nobody (not queued)")
            return False
        if tell_core:
            await self._core_connected(conversation_id, agent)
        try:
            await self.reader.assign(conversation_id, agent, how=how)
        except StoreError as exc:
            log.error("conversation %s: %s's assignment not recorded: %s", conversation_id, agent, exc)
        await self.dispatcher.changed()  # the node of their desktop shows it as theirs (``active``)
        return True

    async def agent_called(self, conversation_id: str, agent_interface: str) -> None:
        """Hook for the telephony side: the PBX rings the agent on ``agent_interface`` for this
        call (AMI AgentCalled): their desktop pops the conversation before they answer."""
        account = self.book.by_interface(agent_interface)
        if account is None or self.dispatcher is None:
            log.info("conversation %s rings %s, which is no agent account: no screen-pop", conversation_id,
                     agent_interface)
            return
        try:
            await self.dispatcher.queue.apply(conversation_id, q.ring(account.name))
        except StoreError as exc:
            log.warning("conversation %s: ringing %s not recorded: %s", conversation_id, account.name, exc)
        await self._publish_pop({"conversation_id": conversation_id, "agent_id": account.name, "state": "ringing"})

    async def agent_connected(self, conversation_id: str, agent_interface: str) -> None:
        """Hook for the telephony side: the agent on ``agent_interface`` (an account name or one of
        an account's ``interfaces``) really answered; record it and pop their screen (any node)."""
        account = self.book.by_interface(agent_interface)
        if account is None:
            log.warning("conversation %s answered by %s, which is no agent account: no screen-pop",
                        conversation_id, agent_interface)
            return
        if self.dispatcher is not None:
            try:
                if await self.assign_now(conversation_id, account.name, how="answered", tell_core=True):
                    return
            except StoreError as exc:
                log.warning("conversation %s: answer by %s not queued: %s", conversation_id, account.name, exc)
        await self._route(conversation_id, account.name, how="answered", state="active")

    async def _core_connected(self, conversation_id: str, agent: str) -> None:
        """Tell the core who holds the call now (the desktop closes it with a disposition)."""
        if self.core is not None:
            try:
                await self.core.handle(conversation_id, AgentConnected(agent_id=agent, name=agent))
            except LookupError:
                log.warning("conversation %s answered by %s is not in the store", conversation_id, agent)

    async def _route(self, conversation_id: str, agent_id: str, *, how: str, state: str = "") -> None:
        try:
            await self.reader.assign(conversation_id, agent_id, how=how)
        except StoreError as exc:
            log.error("conversation %s: routing to %s not recorded (%s); no screen-pop", conversation_id, agent_id, exc)
            return
        await self._publish_pop({"conversation_id": conversation_id, "agent_id": agent_id, "state": state})

    async def _publish_pop(self, message: dict[str, Any]) -> None:
        conversation_id = str(message.get("conversation_id", ""))
        try:
            await self._fanout.publish(SCREENPOP, message)
        except StoreError as exc:
            # without the fan-out, an agent on this node still gets the pop
            log.warning("screen-pop of conversation %s through the fan-out failed (%s); delivering locally",
                        conversation_id, exc)
            await self._deliver(message)

    async def _deliver(self, message: dict[str, Any]) -> None:
        agent_id = str(message.get("agent_id", ""))
        cid = str(message.get("conversation_id", ""))
        desks = [d for d in self._sockets.get(agent_id, ()) if not d.ws.closed]
        if not desks:
            return
        for desk in [d for d in desks if not self._still_signed_in(d)]:
            desks.remove(desk)
            await desk.ws.close(message=b"signed out")
        account = self.book.get(agent_id)
        if not desks or account is None:
            return
        try:
            context = await self.reader.read(account.principal, cid, via=Via.SCREEN_POP,
                                             address=",".join(sorted({d.address for d in desks})))
        except LookupError:
            log.warning("screen-pop for unknown conversation %s dropped", cid)
            return
        except ReadRefused:
            return  # logged and audited by the reader
        except StoreError as exc:
            log.error("screen-pop of conversation %s to %s not delivered: %s", cid, agent_id, exc)
            return
        frame = {"type": "screen_pop", "conversation_id": cid, "context": context,
                 "offer": message.get("offer") or None, "state": str(message.get("state") or "")}
        for desk in desks:
            await desk.ws.send_json(frame)
        if frame["state"] == "active" and self.work is not None:
            self.work.shown(agent_id, cid)
        self._metrics.inc("voicegw_screenpops_total")
        log.info("screen-pop of conversation %s delivered to agent %s", cid, agent_id)

    async def _on_presence(self, message: dict[str, Any]) -> None:
        node = str(message.get("node", ""))
        if message.get("type") == "hello" and node != self.node:
            for presence in self.registry.agents():
                if presence.node == self.node:
                    await self._publish(PRESENCE, {"type": "presence", **presence.as_message()})
        elif message.get("type") == "presence" and node != self.node:
            self.registry.update(str(message["agent_id"]), node=node, skills=message.get("skills", []),
                                 languages=message.get("languages", []), available=bool(message.get("available")),
                                 role=Role(str(message.get("role", "agent"))), queues=message.get("queues", []))
        elif message.get("type") == "gone" and node != self.node:
            self.registry.remove(str(message.get("agent_id", "")))

    async def _publish(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self._fanout.publish(channel, message)
        except StoreError as exc:
            log.warning("agent desktop fan-out on %s failed: %s", channel, exc)

    async def start(self) -> None:
        """Subscribe to the fan-out and ask other nodes for their agents.

        A fan-out that cannot be reached (Redis down) is logged and retried in the background;
        the rest of the web server starts anyway."""
        for channel, handler in ((SCREENPOP, self._deliver), (PRESENCE, self._on_presence)):
            ready = asyncio.Event()
            listener = listen(self._fanout, channel, handler, ready, what="agent desktop",
                              handler_errors=(KeyError, TypeError, ValueError, ConnectionError))
            self._tasks.append(asyncio.create_task(listener, name=f"agents-{channel}"))
            await ready.wait()
        await self._publish(PRESENCE, {"type": "hello", "node": self.node})

    async def close(self) -> None:
        """Stop listening and close desktops."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # shutting down: report and go on closing
                log.exception("agent desktop listener ended with an error")
        for desks in list(self._sockets.values()):
            for desk in list(desks):
                await desk.ws.close()
