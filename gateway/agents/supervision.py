"""The supervisor page: every live conversation, its live transcript, and stepping in.

- ``GET /supervisor``: the page, for a signed-in supervisor or admin (the desktop's sign-in
  cookie); an agent gets a 403 page, anyone else the sign-in form.
- ``GET /supervisor/ws``: the page's socket (cookie or ``Authorization: Bearer``; a foreign
  Origin is refused). It receives the live list (``conversations``: channel, journey step,
  waiting time, frustration, who holds it; then ``conversation`` updates as turns happen), the
  queue and the agents online; ``watch`` a conversation to get its transcript (a read,
  authorized and audited like any other) and then its ``lines`` as they are logged, voice turns
  as they are recognized.

From there (:mod:`gateway.agents.desk_protocol`): **take over** (the core announces the hand-over
to the customer and the named agent, or the supervisor, gets it now), **whisper** (a private
note to the agent holding it; never shown to the customer), **steer** the bot (a step of the
current journey, an agent offer, a polite end). Every action and every refusal is written to
the conversation's audit log before anything is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import WSMsgType, web

from gateway.agents.access import Permission, Via, authorize
from gateway.agents.accounts import Principal
from gateway.agents.desk_protocol import (DeskProtocolError, SteerCmd, SupervisorCommand, TakeOverCmd, Watch, Whisper,
                                          parse_supervisor_frame)
from gateway.agents.live import LiveHub, summary
from gateway.agents.queue_store import QueueStore
from gateway.agents.reads import ConversationReader, ReadRefused
from gateway.agents.signin import DeskAuth, client_address, same_origin
from gateway.config import Settings
from gateway.context.store import ContextStore, StoreError
from gateway.core.events import Steer, TakeOver
from gateway.core.port import ConversationPort
from gateway.limits import TokenBuckets
from gateway.pages import refusal

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024
MAX_BAD_FRAMES = 5
MAX_LIVE = 200
"""Conversations the live list shows at most (the most recently active)."""
REFRESH_SECONDS = 2.0
"""How often the queue and the agents online are looked at again for open supervisor pages."""
MAX_WATCHED = 20
"""Conversations one page watches at once."""
MAX_PAGES = 100
"""Supervisor pages open at once on one node (a team's supervisors, several tabs each); more get 503."""
COMMANDS_PER_MINUTE = 60
"""Watches, take-overs, whispers and steerings one supervisor may send a minute."""


@dataclass(eq=False)
class SupervisorSocket:
    ws: web.WebSocketResponse
    principal: Principal
    address: str
    watching: set[str]


class Supervision:
    """Serves supervisor pages and carries out what supervisors do."""

    def __init__(self, settings: Settings, auth: DeskAuth, core: ConversationPort, store: ContextStore | None,
                 queue: QueueStore, reader: ConversationReader, hub: LiveHub, desktop: Any, static_dir: Any,
                 journeys: dict[str, list[str]], *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._auth = auth
        self._core = core
        self._store = store
        self._queue = queue
        self._reader = reader
        self._hub = hub
        self._desktop = desktop
        self._static_dir = static_dir
        self._journeys = journeys
        self._clock = clock
        self._sockets: set[SupervisorSocket] = set()
        self._commands = TokenBuckets(COMMANDS_PER_MINUTE, clock=time.monotonic)
        self._last: str = ""
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ page and socket
    async def page(self, request: web.Request) -> web.StreamResponse:
        """GET /supervisor."""
        principal = self._auth.session(request)
        if principal is None:
            return self._auth.sign_in_page(401, "Sign in with a supervisor's token to open the supervisor page.")
        decision = authorize(principal, Permission.SUPERVISE)
        if not decision:
            return refusal("Supervisors only", decision.reason, status=403)
        return web.FileResponse(self._static_dir / "supervisor.html",
                                headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    async def socket(self, request: web.Request) -> web.StreamResponse:
        """GET /supervisor/ws."""
        if "token" in request.query:
            return web.json_response({"error": "tokens in URLs are not accepted"}, status=400)
        attempt = await self._auth.principal(request)
        if attempt.principal is None:
            return web.json_response({"error": attempt.message}, status=attempt.status)
        principal = attempt.principal
        decision = authorize(principal, Permission.SUPERVISE)
        if not decision:
            log.warning("supervisor socket refused to %s %s from %s", principal.role.value, principal.name,
                        client_address(request))
            return web.json_response({"error": decision.reason}, status=403)
        if not same_origin(request, self._settings.web.public_url):
            return web.json_response({"error": "foreign origin"}, status=403)
        if len(self._sockets) >= MAX_PAGES:
            log.warning("supervisor page of %s refused: %d pages open on this node", principal.name, MAX_PAGES)
            return web.json_response({"error": "too many supervisor pages open; try again shortly"}, status=503,
                                     headers={"Retry-After": "5"})
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30.0)
        await ws.prepare(request)
        sock = SupervisorSocket(ws, principal, client_address(request), set())
        self._sockets.add(sock)
        log.info("supervisor %s connected from %s", principal.name, sock.address)
        try:
            await self._audit(principal, "supervise", "", address=sock.address)
            await ws.send_json({"type": "welcome", "name": principal.name, "role": principal.role.value,
                                "journeys": self._journeys})
            await ws.send_json({"type": "conversations", "conversations": await self._live_list()})
            await ws.send_json(await self._state())
            await self._serve(sock)
        finally:
            self._sockets.discard(sock)
            log.info("supervisor %s disconnected", principal.name)
        return ws

    async def _serve(self, sock: SupervisorSocket) -> None:
        bad = 0
        async for msg in sock.ws:
            if msg.type != WSMsgType.TEXT:
                break
            try:
                command = parse_supervisor_frame(msg.data, max_message_chars=self._settings.chat.max_message_chars)
            except DeskProtocolError as exc:
                bad += 1
                await sock.ws.send_json({"type": "refused", "message": str(exc)})
                if bad > MAX_BAD_FRAMES:
                    log.warning("supervisor %s page closed: too many bad frames", sock.principal.name)
                    break
                continue
            if not self._commands.take(sock.principal.name):
                await sock.ws.send_json({"type": "refused", "conversation_id": command.conversation_id,
                                         "message": f"too many actions: at most {COMMANDS_PER_MINUTE} a minute"})
                continue
            await self.command(sock, command)

    # ------------------------------------------------------------------ what the page shows
    async def _live_list(self) -> list[dict[str, Any]]:
        if self._store is None:
            return []
        since = self._clock() - self._settings.agents.live_minutes * 60
        records = await self._store.recent(MAX_LIVE)
        return [summary(r) for r in records if r.status != "closed" and r.updated_at >= since]

    async def _state(self) -> dict[str, Any]:
        now = self._clock()
        entries = await self._queue.entries()
        held: dict[str, int] = {}
        for entry in entries:
            if entry.taken_by:
                held[entry.taken_by] = held.get(entry.taken_by, 0) + 1
        agents = [{**a.as_message(), "holding": held.get(a.agent_id, 0)} for a in self._desktop.registry.agents()]
        return {"type": "state", "queue": [e.as_json(now) for e in entries][:MAX_LIVE], "agents": agents}

    async def on_live(self, message: dict[str, Any]) -> None:
        if message.get("type") != "turn" or not self._sockets:
            return
        cid = str(message.get("conversation_id", ""))
        row = {"type": "conversation", "summary": message.get("summary", {})}
        lines = {"type": "lines", "conversation_id": cid, "lines": message.get("lines", [])}
        for sock in list(self._sockets):
            await self._send(sock, row)
            if cid in sock.watching:
                await self._send(sock, lines)

    async def _send(self, sock: SupervisorSocket, frame: dict[str, Any]) -> None:
        if sock.ws.closed:
            return
        try:
            await sock.ws.send_json(frame)
        except ConnectionError as exc:
            log.info("supervisor %s page send failed: %s", sock.principal.name, exc)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            if not self._sockets:
                continue
            try:
                state = await self._state()
            except StoreError as exc:
                log.warning("supervisor pages not refreshed: %s", exc)
                continue
            key = repr(state)
            if key != self._last:
                self._last = key
                for sock in list(self._sockets):
                    await self._send(sock, state)

    # ------------------------------------------------------------------ stepping in
    async def _audit(self, principal: Principal, action: str, cid: str, **detail: Any) -> None:
        await self._reader.audit.write(actor=principal.name, role=principal.role.value, action=action,
                                       conversation_id=cid, detail={k: str(v) for k, v in detail.items()})

    async def _refuse(self, sock: SupervisorSocket, action: str, cid: str, why: str) -> None:
        try:
            await self._audit(sock.principal, f"{action}_refused", cid, reason=why)
        except StoreError as exc:
            log.error("conversation %s: refused %s not audited: %s", cid, action, exc)
        await self._send(sock, {"type": "refused", "conversation_id": cid, "action": action, "message": why})

    async def command(self, sock: SupervisorSocket, command: SupervisorCommand) -> None:
        principal, cid = sock.principal, command.conversation_id
        permission = {Watch: Permission.SUPERVISE, TakeOverCmd: Permission.TAKE_OVER, Whisper: Permission.WHISPER,
                      SteerCmd: Permission.STEER}[type(command)]
        action = {Watch: "watch", TakeOverCmd: "take_over", Whisper: "whisper", SteerCmd: "steer"}[type(command)]
        decision = authorize(principal, permission)
        if not decision:
            await self._refuse(sock, action, cid, decision.reason)
            return
        try:
            if isinstance(command, Watch):
                await self._watch(sock, cid)
            elif isinstance(command, TakeOverCmd):
                await self._take_over(sock, cid, command.agent or principal.name)
            elif isinstance(command, Whisper):
                await self._whisper(sock, cid, command.text)
            else:
                await self._steer(sock, command)
        except LookupError:
            await self._refuse(sock, action, cid, f"no conversation {cid}")
        except StoreError as exc:
            log.error("conversation %s: supervisor %s's %s not done: %s", cid, principal.name, action, exc)
            await self._send(sock, {"type": "refused", "conversation_id": cid, "action": action,
                                    "message": "the audit log or the store cannot be reached; nothing was done"})

    async def _watch(self, sock: SupervisorSocket, cid: str) -> None:
        try:
            context = await self._reader.read(sock.principal, cid, via=Via.PAGE, address=sock.address)
        except ReadRefused as exc:
            await self._send(sock, {"type": "refused", "conversation_id": cid, "action": "watch", "message": exc.reason})
            return
        if len(sock.watching) >= MAX_WATCHED:
            sock.watching.pop()
        sock.watching.add(cid)
        await self._send(sock, {"type": "transcript", "conversation_id": cid, "context": context})

    async def _take_over(self, sock: SupervisorSocket, cid: str, agent: str) -> None:
        if self._desktop.book.get(agent) is None:
            await self._refuse(sock, "take_over", cid, f"there is no agent account {agent}")
            return
        entry = await self._queue.get(cid)
        if entry is not None and entry.taken_by:
            await self._refuse(sock, "take_over", cid, f"{entry.taken_by} holds it already; whisper to them instead")
            return
        await self._audit(sock.principal, "take_over", cid, agent=agent, address=sock.address)
        actions = await self._core.handle(cid, TakeOver(supervisor=sock.principal.name, agent=agent))
        refused = [a.text for a in actions if a.kind == "StaffNotice"]
        if refused:
            await self._refuse(sock, "take_over", cid, refused[0])
            return
        log.info("conversation %s taken over by supervisor %s for %s", cid, sock.principal.name, agent)
        await self._send(sock, {"type": "done", "conversation_id": cid, "action": "take_over", "agent": agent})

    async def _whisper(self, sock: SupervisorSocket, cid: str, text: str) -> None:
        entry = await self._queue.get(cid)
        if entry is None or not entry.taken_by:
            await self._refuse(sock, "whisper", cid, "no agent holds this conversation to whisper to")
            return
        await self._audit(sock.principal, "whisper", cid, agent=entry.taken_by, chars=len(text))
        await self._hub.publish({"type": "whisper", "conversation_id": cid, "agent": entry.taken_by,
                                 "from": sock.principal.name, "text": text})
        await self._send(sock, {"type": "done", "conversation_id": cid, "action": "whisper", "agent": entry.taken_by})

    async def _steer(self, sock: SupervisorSocket, command: SteerCmd) -> None:
        cid = command.conversation_id
        await self._audit(sock.principal, "steer", cid, instruction=command.instruction, step=command.step)
        actions = await self._core.handle(cid, Steer(supervisor=sock.principal.name, instruction=command.instruction,
                                                     step=command.step))
        refused = [a.text for a in actions if a.kind == "StaffNotice"]
        if refused:
            await self._refuse(sock, "steer", cid, refused[0])
            return
        await self._send(sock, {"type": "done", "conversation_id": cid, "action": "steer"})

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh(), name="supervisor-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for sock in list(self._sockets):
            await sock.ws.close()
