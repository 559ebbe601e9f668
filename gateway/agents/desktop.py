"""The agent desktop: sign-in, presence over WebSocket, screen-pops, and the REST context API.

- ``GET /agent``: the desktop page, for a signed-in agent only (session cookie, or
  ``?token=`` once); anyone else gets a 401 sign-in page, a wrong token a 403 page.
- ``POST /agent/login``: form sign-in with the token from ``settings.agents.tokens``. With no
  tokens configured (the embedded default) one token for the agent ``agent`` is generated once,
  kept in ``<data_dir>/agent-token`` and logged with the desktop's URL, so a laptop user can
  sign in; nobody gets in without a token.
- ``GET /agent/ws``: the desktop's socket. The agent states skills and languages
  (``{"type": "ready", "skills": [...], "languages": [...], "available": true}``) and receives
  ``{"type": "screen_pop", "conversation_id": ..., "context": {...}}`` on transfer.
- ``GET /api/conversations/{id}/context`` with ``Authorization: Bearer <agent token>``: the
  same context as JSON for third-party desktops and CRMs.

Routing across nodes goes through the context store's fan-out: presence is announced on
``agents``, screen-pops on ``screenpop`` naming the chosen agent; the node holding that agent's
socket fetches the context from the (shared) store and delivers it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from gateway.agents.registry import AgentRegistry, clean_labels
from gateway.config import Settings
from gateway.context.fanout import Fanout, listen
from gateway.context.store import StoreError
from gateway.core.actions import Action, ScreenPop, Transfer
from gateway.core.port import ConversationPort
from gateway.links import LinkRefused, LinkSigner
from gateway.web.html import page
from gateway.web.metrics import Metrics

log = logging.getLogger(__name__)

COOKIE = "voicegw_agent"
SESSION_SECONDS = 12 * 3600
MAX_FRAME_BYTES = 4096
PRESENCE, SCREENPOP = "agents", "screenpop"
TOKEN_FILE = "agent-token"
DEFAULT_AGENT = "agent"
SIGN_IN_FORM = ("<form method=\"post\" action=\"/agent/login\"><label>Agent token"
                "<input name=\"token\" type=\"password\" required autocomplete=\"off\"></label>"
                "<button type=\"submit\">Sign in</button></form>")


def load_or_create_token(path: Path) -> str:
    """The generated agent token kept at ``path`` (created once, mode 0600)."""
    try:
        token = path.read_text(encoding="ascii").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token)
    return token


class AgentDesktop:
    """Serves agent desktops and carries out ScreenPop for them."""

    def __init__(self, settings: Settings, core: ConversationPort, signer: LinkSigner,
                 fanout: Fanout, metrics: Metrics, static_dir: Any) -> None:
        self._settings = settings
        self._core = core
        self._signer = signer
        self._fanout = fanout
        self._metrics = metrics
        self._static_dir = static_dir
        self.node = secrets.token_hex(4)
        self.registry = AgentRegistry()
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self._routing: dict[str, tuple[tuple[str, ...], str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.tokens: dict[str, str] = dict(settings.agents.tokens) or {
            load_or_create_token(settings.data_path(TOKEN_FILE)): DEFAULT_AGENT}
        self.generated_token = "" if settings.agents.tokens else next(iter(self.tokens))
        metrics.gauge("voicegw_agents_online", lambda: float(len(self._sockets)))

    # ------------------------------------------------------------------ authentication
    def agent_for_token(self, token: str) -> str:
        """The agent id a sign-in token belongs to, or '' (constant-time comparison)."""
        found = ""
        for known, agent_id in self.tokens.items():
            if token and hmac.compare_digest(known.encode(), token.encode()):
                found = agent_id
        return found

    def session_agent(self, request: web.Request) -> str:
        """The signed-in agent of the request's session cookie, or ''."""
        cookie = request.cookies.get(COOKIE, "")
        if not cookie:
            return ""
        try:
            agent_id = self._signer.verify(cookie, kind="agent", check_used=False).conversation_id
        except LinkRefused:
            return ""
        return agent_id if agent_id in self.tokens.values() else ""

    def _set_session(self, response: web.StreamResponse, agent_id: str) -> None:
        response.set_cookie(COOKIE, self._signer.issue(agent_id, "agent", ttl_seconds=SESSION_SECONDS, kind="agent"),
                            max_age=SESSION_SECONDS, httponly=True, samesite="Strict", path="/")

    def _refuse(self, request: web.Request, status: int, why: str) -> web.Response:
        log.warning("agent desktop refused (%s) from %s", why, request.remote)
        if status == 401:
            return page("Agent sign-in", f"<p class=\"refused\" id=\"refusal\">Sign in with your agent token to "
                                         f"open the desktop.</p>{SIGN_IN_FORM}", status=401)
        return page("Agent sign-in", f"<p class=\"refused\" id=\"refusal\">That agent token is not valid.</p>"
                                     f"{SIGN_IN_FORM}", status=403)

    # ------------------------------------------------------------------ pages and REST
    async def desk(self, request: web.Request) -> web.StreamResponse:
        """GET /agent."""
        token = request.query.get("token", "")
        agent_id = self.agent_for_token(token) if token else self.session_agent(request)
        if not agent_id:
            return self._refuse(request, 403 if token else 401, "bad token" if token else "no token")
        response = web.FileResponse(self._static_dir / "agent.html", headers={"Cache-Control": "no-store"})
        if token:
            self._set_session(response, agent_id)
        return response

    async def login(self, request: web.Request) -> web.Response:
        """POST /agent/login."""
        form = await request.post()
        token = form.get("token")
        agent_id = self.agent_for_token(token) if isinstance(token, str) else ""
        if not agent_id:
            return self._refuse(request, 403, "bad token")
        response = web.HTTPSeeOther("/agent")
        self._set_session(response, agent_id)
        log.info("agent %s signed in from %s", agent_id, request.remote)
        raise response

    async def context_api(self, request: web.Request) -> web.Response:
        """GET /api/conversations/{id}/context (Bearer agent token)."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return web.json_response({"error": "agent token required (Authorization: Bearer ...)"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        agent_id = self.agent_for_token(auth[len("Bearer "):].strip())
        if not agent_id:
            log.warning("context API refused: bad agent token from %s", request.remote)
            return web.json_response({"error": "agent token not valid"}, status=403)
        cid = request.match_info["conversation_id"]
        try:
            context = await self._core.context(cid)
        except LookupError:
            return web.json_response({"error": f"no conversation {cid}"}, status=404)
        log.info("context of conversation %s read by agent %s over REST", cid, agent_id)
        return web.json_response(context)

    # ------------------------------------------------------------------ the desktop socket
    async def socket(self, request: web.Request) -> web.StreamResponse:
        """GET /agent/ws."""
        token = request.query.get("token", "")
        agent_id = self.agent_for_token(token) if token else self.session_agent(request)
        if not agent_id:
            return web.json_response({"error": "agent sign-in required"}, status=403)
        origin = request.headers.get("Origin", "")
        if origin and urlsplit(origin).netloc not in (request.host, urlsplit(self._settings.web.public_url).netloc):
            log.warning("agent %s desktop socket refused: foreign origin %s", agent_id, origin)
            return web.json_response({"error": "foreign origin"}, status=403)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30.0)
        await ws.prepare(request)
        self._sockets.setdefault(agent_id, set()).add(ws)
        log.info("agent %s desktop connected", agent_id)
        await ws.send_json({"type": "welcome", "agent_id": agent_id})
        bad = 0
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    data = msg.json()
                    if not isinstance(data, dict) or data.get("type") != "ready":
                        raise ValueError("expected {\"type\": \"ready\", \"skills\": [...], \"languages\": [...]}")
                    skills = clean_labels(data.get("skills", []))
                    languages = clean_labels(data.get("languages", []))
                    available = bool(data.get("available", True))
                except ValueError as exc:
                    bad += 1
                    await ws.send_json({"type": "refused", "message": str(exc)})
                    if bad > 5:
                        log.warning("agent %s desktop closed: too many bad frames", agent_id)
                        break
                    continue
                presence = self.registry.update(agent_id, node=self.node, skills=skills, languages=languages,
                                                available=available)
                await self._publish(PRESENCE, {"type": "presence", **presence.as_message()})
                await ws.send_json({"type": "ready", "skills": sorted(skills), "languages": sorted(languages),
                                    "available": available})
        finally:
            sockets = self._sockets.get(agent_id, set())
            sockets.discard(ws)
            if not sockets:
                self._sockets.pop(agent_id, None)
                self.registry.remove(agent_id)
                await self._publish(PRESENCE, {"type": "gone", "agent_id": agent_id, "node": self.node})
            log.info("agent %s desktop disconnected", agent_id)
        return ws

    # ------------------------------------------------------------------ screen-pops
    async def on_transfer(self, conversation_id: str, action: Action) -> None:
        """Sink for Transfer: remember the skills and language the next ScreenPop routes by."""
        if isinstance(action, Transfer):
            self._routing[action.conversation_id or conversation_id] = (tuple(action.skills), action.language)
            while len(self._routing) > 10_000:
                self._routing.pop(next(iter(self._routing)))

    async def on_screen_pop(self, conversation_id: str, action: Action) -> None:
        """Sink for ScreenPop: choose the agent by skills and language, fan the pop out."""
        if not isinstance(action, ScreenPop):
            return
        cid = action.conversation_id or conversation_id
        customer = action.context.get("customer") or {}
        skills, language = self._routing.pop(cid, ((), str(customer.get("language", "")) if isinstance(customer, dict) else ""))
        agent_id = self.registry.choose(skills, language)
        if not agent_id:
            self._metrics.inc("voicegw_screenpops_unrouted_total")
            log.warning("screen-pop for conversation %s: no available agent (skills %s, language %s)",
                        cid, ",".join(skills) or "-", language or "-")
            return
        await self._pop(cid, agent_id)

    async def agent_connected(self, conversation_id: str, agent_id: str) -> None:
        """Hook for the telephony side: ``agent_id`` really answered; pop their screen (any node)."""
        await self._pop(conversation_id, agent_id)

    async def _pop(self, conversation_id: str, agent_id: str) -> None:
        message = {"conversation_id": conversation_id, "agent_id": agent_id}
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
        sockets = [ws for ws in self._sockets.get(agent_id, ()) if not ws.closed]
        if not sockets:
            return
        try:
            context = await self._core.context(cid)
        except LookupError:
            log.warning("screen-pop for unknown conversation %s dropped", cid)
            return
        for ws in sockets:
            await ws.send_json({"type": "screen_pop", "conversation_id": cid, "context": context})
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
                                 languages=message.get("languages", []), available=bool(message.get("available")))
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
        for sockets in list(self._sockets.values()):
            for ws in list(sockets):
                await ws.close()
