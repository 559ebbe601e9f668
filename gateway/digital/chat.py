"""The web chat channel: a WebSocket at ``/chat/ws`` in front of the conversation core.

One socket is one chat session on one conversation. The session is opened (or resumed) during
the WebSocket handshake, so the gateway can set the returning-customer cookie (a signed
reference to the conversation, to this browser's core session, and once identified, the
customer) on the handshake response. A customer returns by that cookie or by a signed link
``?c=<token>`` that a follow-up message carried. What the chat proved (a passed check) is bound
to the core session the cookie names, so it survives a page reload in the same browser and
nowhere else; a link that was texted to the phone on file proves that phone when opened.

Bounds, so that one client flooding never refuses the customer next to it (same office, same
NAT, same proxy): messages are limited per conversation across its sockets, and per client
address only as a coarse outer bound that a quiet conversation never feels
(:mod:`gateway.digital.chat_limits`). The client address is the TCP peer, or what
``X-Forwarded-For`` says when the peer is one of ``web.trusted_proxies``
(:mod:`gateway.client_address`). A chat over the node's or the address's open chats, or
opened too fast, is refused before the upgrade (HTTP 503 or 429 with Retry-After; nothing is
created). Frames larger than the WebSocket limit close the socket (code 1009); messages longer
than ``chat.max_message_chars`` or over a rate are refused with a frame saying why and when to
retry (the text is echoed back, nothing is lost); a client that keeps breaking the rules is
closed with code 1008. Each failure ends that one socket only, with a log line carrying the
conversation id.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.config import Settings
from gateway.core.actions import Action
from gateway.core.events import CallAccepted, ChannelClosed, ChatMessage, ChatStarted, QueueChoice
from gateway.core.port import ConversationPort
from gateway.digital.chat_limits import ChatLimits, Refusal
from gateway.digital.chat_protocol import (
    ChatProtocolError,
    ClientAcceptCall,
    ClientPing,
    ClientQueueChoice,
    ClientText,
    ClientTyping,
    dumps,
    encode_action,
    parse_client_frame,
)
from gateway.limits import TokenBuckets
from gateway.links import LinkRefused, LinkSigner
from gateway.client_address import ClientAddresses
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

COOKIE = "voicegw_chat"
"""Signed reference to the conversation; lives as long as the core's resume window."""
CUSTOMER_COOKIE = "voicegw_customer"
"""Signed reference to the identified customer, kept longer: a later chat starts a new
conversation for a known customer."""
CUSTOMER_COOKIE_SECONDS = 90 * 24 * 3600
MAX_BAD_FRAMES = 5
"""Protocol violations tolerated on one socket before it is closed."""
TYPING_FRAME_CHARS = 64
"""A typing signal is a tiny frame; anything longer goes through the message path and its limits."""
TYPING_PER_MINUTE = 60
"""Typing signals a conversation sends free a minute (the page sends one every 2 s while the
customer types: 30); past that each costs a message, so a typing flood is a message flood."""
MAX_PENDING_PER_CONVERSATION = 50
"""Chat follow-ups kept for a conversation with no open chat, delivered when it returns."""


class ChatChannel:
    """Serves chat sockets and pushes core actions to the open chats of a conversation."""

    def __init__(
        self,
        settings: Settings,
        core: ConversationPort,
        signer: LinkSigner,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._core = core
        self._signer = signer
        self._metrics = metrics
        self._addresses = ClientAddresses(settings.web.trusted_proxies)
        self._limits = ChatLimits(settings.chat, clock=clock, metrics=metrics)
        self._typing = TokenBuckets(TYPING_PER_MINUTE, clock=clock)
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self._pending: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.live: Any = None
        """The live feed's chat side (:class:`~gateway.digital.chat_live.ChatLive`): what people send."""
        metrics.gauge("voicegw_chat_sockets", lambda: float(sum(len(s) for s in self._sockets.values())))

    @property
    def max_frame_bytes(self) -> int:
        """Largest WebSocket frame read: the longest message JSON-escaped, plus envelope."""
        return self._settings.chat.max_message_chars * 6 + 1024

    def is_open(self, conversation_id: str) -> bool:
        """True when a chat socket of ``conversation_id`` is open on this node."""
        return bool(self._sockets.get(conversation_id))

    async def push(self, conversation_id: str, frame: dict[str, Any], frame_id: str = "") -> bool:
        """Send ``frame`` to every open chat of the conversation; keep it for later if none."""
        if await self.send_now(conversation_id, frame):
            return True
        self.keep(conversation_id, frame, frame_id)
        return False

    async def send_now(self, conversation_id: str, frame: dict[str, Any]) -> bool:
        """Send ``frame`` to the conversation's open chats on this node; True if one took it."""
        sent = False
        for ws in [ws for ws in self._sockets.get(conversation_id, ()) if not ws.closed]:
            try:
                await ws.send_str(dumps(frame))
                sent = True
            except ConnectionError as exc:
                log.info("chat push to conversation %s failed on one socket: %s", conversation_id, exc)
        return sent

    def keep(self, conversation_id: str, frame: dict[str, Any], frame_id: str = "") -> None:
        """Hold ``frame`` until a chat of the conversation opens on this node."""
        pending = self._pending.setdefault(conversation_id, [])
        pending.append((frame_id, frame))
        del pending[:-MAX_PENDING_PER_CONVERSATION]

    def forget(self, conversation_id: str, frame_id: str) -> None:
        """Drop a held frame another node delivered."""
        pending = self._pending.get(conversation_id)
        if pending:
            pending[:] = [(fid, f) for fid, f in pending if fid != frame_id]
            if not pending:
                del self._pending[conversation_id]

    def _resume_from(self, request: web.Request) -> tuple[str, str, str, str, str]:
        """(conversation id, customer id, core session id, link proof, notice for the customer)
        from ``?c=`` or the cookies."""
        notice = ""
        link = request.query.get("c", "")
        if link:
            try:
                claims = self._signer.consume(link)
                log.info("chat resumed by link %s for conversation %s", claims.token_id, claims.conversation_id)
                return claims.conversation_id, claims.customer_id, "", claims.proof, ""
            except LinkRefused as exc:
                self._metrics.inc("voicegw_links_refused_total", reason=exc.reason)
                log.warning("chat link refused (%s) token %s from %s", exc.reason, exc.token_id or "-",
                            request.remote)
                notice = ("That chat link has expired or was already used; "
                          "we have started a fresh chat." if exc.status == 410 else
                          "That chat link is not valid; we have started a fresh chat.")
        found: dict[str, str] = {}
        for name in (COOKIE, CUSTOMER_COOKIE):
            ref = request.cookies.get(name, "")
            if not ref:
                continue
            try:
                claims = self._signer.verify(ref, kind="ref", check_used=False)
            except LinkRefused as exc:
                log.info("chat cookie %s ignored (%s) from %s", name, exc.reason, request.remote)
                continue
            found.setdefault("conversation", claims.conversation_id if name == COOKIE else "")
            found.setdefault("session", claims.session if name == COOKIE else "")
            found["customer"] = found.get("customer") or claims.customer_id
        return found.get("conversation", ""), found.get("customer", ""), found.get("session", ""), "", notice

    async def _customer_of(self, conversation_id: str, known: str) -> str:
        """The customer the conversation has identified (for the returning-customer cookie)."""
        try:
            customer = (await self._core.context(conversation_id)).get("customer") or {}
        except LookupError:
            return known
        return str(customer.get("id") or known) if isinstance(customer, dict) else known

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """GET /chat/ws: one chat session."""
        ws = web.WebSocketResponse(max_msg_size=self.max_frame_bytes, heartbeat=30.0)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="this endpoint speaks WebSocket\n")
        client = self._addresses.of(request)
        refusal = self._limits.admit(client)
        if refusal is not None:
            return self._refuse_open(refusal, client)
        try:
            return await self._open_session(ws, request, client)
        finally:
            self._limits.release(client)

    def _refuse_open(self, refusal: Refusal, client: str, conversation_id: str = "") -> web.Response:
        """The HTTP answer to a chat that is not opened (nothing was created for it)."""
        if refusal.code != "node_full":  # that one is voicegw_sessions_refused_total{server="chat"}
            self._metrics.inc("voicegw_chat_refused_total", reason=refusal.code)
        if self._limits.worth_logging(refusal, client):
            log.warning("chat session%s refused from %s: %s", f" for conversation {conversation_id}"
                        if conversation_id else "", client, refusal.code.replace("_", " "))
        text = ("the chat is busy; try again in a moment\n" if refusal.status == 503
                else "too many chats opened; try again shortly\n")
        return web.Response(status=refusal.status, text=text,
                            headers={"Retry-After": str(max(1, math.ceil(refusal.retry_after)))})

    async def _open_session(self, ws: web.WebSocketResponse, request: web.Request,
                            client: str) -> web.StreamResponse:
        resume_id, customer_id, session_id, link_proof, notice = self._resume_from(request)
        refusal = self._limits.open(resume_id, client)
        if refusal is not None:
            return self._refuse_open(refusal, client, resume_id)
        opened = await self._core.open(
            "chat", conversation_id=resume_id, customer_id=customer_id,
            event=ChatStarted(channel="chat", customer_ref=customer_id),
            session_id=session_id, link_proof=link_proof,
        )
        cid = opened.conversation_id
        if not opened.resumed:
            self._limits.started(cid, client)
        customer_id = await self._customer_of(cid, customer_id) if opened.resumed else customer_id
        window = max(60, int(self._settings.context.resume_window_minutes * 60))
        ws.set_cookie(COOKIE, self._signer.issue(cid, "chat", ttl_seconds=window, kind="ref",
                                                 customer_id=customer_id, session=opened.session_id),
                      max_age=window, httponly=True, samesite="Lax", path="/")
        if customer_id:
            ws.set_cookie(CUSTOMER_COOKIE, self._signer.issue("", "customer", ttl_seconds=CUSTOMER_COOKIE_SECONDS,
                                                              kind="ref", customer_id=customer_id),
                          max_age=CUSTOMER_COOKIE_SECONDS, httponly=True, samesite="Lax", path="/")
        await ws.prepare(request)
        self._sockets.setdefault(cid, set()).add(ws)
        self._metrics.inc("voicegw_chat_sessions_total", resumed=str(opened.resumed).lower())
        log.info("chat open conversation %s resumed=%s from %s", cid, opened.resumed, client)
        reason = "closed"
        try:
            await ws.send_str(dumps({"type": "session", "conversation_id": cid, "resumed": opened.resumed,
                                    "max_message_chars": self._settings.chat.max_message_chars}))
            if notice:
                await ws.send_str(dumps({"type": "notice", "text": notice}))
            for _frame_id, frame in self._pending.pop(cid, []):
                await ws.send_str(dumps(frame))
            session = _Session(cid, opened.session_id)
            await self._send_actions(ws, session, opened.actions)
            if self.live is not None:
                await self.live.opened(cid, ws, _since(request))
            reason = await self._serve(ws, request, session)
        finally:
            sockets = self._sockets.get(cid)
            if sockets is not None:
                sockets.discard(ws)
                if not sockets:
                    del self._sockets[cid]
            if not ws.closed:
                await ws.close()
            log.info("chat closed conversation %s: %s", cid, reason)
            if not self.is_open(cid):
                try:
                    await self._core.handle(cid, ChannelClosed(reason=reason, channel="chat"),
                                            session_id=opened.session_id)
                except Exception as exc:  # the chat is gone either way; the core logs its own failures
                    log.warning("chat conversation %s: could not record the close: %s", cid, exc)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request, session: "_Session") -> str:
        client = self._addresses.of(request)
        bad = 0
        flooded = 0  # refused by the conversation's own rate
        crowded = 0  # refused by the address's outer bound (other clients may have spent it)
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                log.warning("chat socket error conversation %s: %s", session.cid, ws.exception())
                return "socket error"
            if msg.type != WSMsgType.TEXT:
                bad += 1
                await self._refuse(ws, "bad_frame", "only JSON text frames are accepted")
            elif _is_typing(msg.data) and self._typing.take(session.cid):
                # typing costs no message: it is only relayed to an agent, a second apart at most
                if self.live is not None:
                    await self.live.customer_typing(session.cid)
            elif (limited := self._limits.message(session.cid, client)) is not None:
                if limited.code == "rate_limited":
                    flooded += 1
                    message = f"too many messages: the limit is {self._settings.chat.messages_per_minute} a minute"
                else:
                    crowded += 1
                    message = "too many messages from your network right now"
                await self._refuse(ws, limited.code, f"{message}; try again in {int(limited.retry_after) + 1} s",
                                   _text_of(msg.data), retry_after=round(limited.retry_after, 1))
            else:
                try:
                    frame = parse_client_frame(msg.data, max_message_chars=self._settings.chat.max_message_chars)
                except ChatProtocolError as exc:
                    bad += exc.code not in ("too_long", "empty")
                    await self._refuse(ws, exc.code, exc.message, exc.text)
                else:
                    if isinstance(frame, ClientPing):
                        await ws.send_str(dumps({"type": "pong"}))
                    elif not isinstance(frame, ClientTyping):  # typing is handled above
                        await self._deliver(ws, session, frame)
            if (bad > MAX_BAD_FRAMES or flooded > self._settings.chat.messages_per_minute
                    or crowded > self._settings.chat.ip_messages_per_minute):
                why = "too many malformed frames" if bad > MAX_BAD_FRAMES else "message flood"
                log.warning("chat conversation %s closed: %s from %s", session.cid, why, client)
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=why.encode())
                return why
        if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
            log.warning("chat conversation %s closed: frame over %d bytes from %s",
                        session.cid, self.max_frame_bytes, client)
            self._metrics.inc("voicegw_chat_refused_total", reason="frame_too_big")
            return "frame too big"
        return "closed by client"

    async def _refuse(self, ws: web.WebSocketResponse, code: str, message: str, text: str = "",
                      **extra: Any) -> None:
        self._metrics.inc("voicegw_chat_refused_total", reason=code)
        await ws.send_str(dumps({"type": "refused", "code": code, "message": message, "text": text, **extra}))

    async def _deliver(self, ws: web.WebSocketResponse, session: "_Session",
                       frame: ClientText | ClientAcceptCall | ClientQueueChoice) -> None:
        session.seq += 1
        if isinstance(frame, ClientText):
            event: Any = ChatMessage(text=frame.text, channel="chat", message_id=frame.message_id)
        elif isinstance(frame, ClientQueueChoice):
            event = QueueChoice(choice=frame.choice, channel="chat")
        else:
            # only a number the customer typed; without one the core calls the number on file
            # it offered (and refuses a call it never offered)
            event = CallAccepted(number=frame.number, channel="chat")
        actions = await self._core.handle(session.cid, event, session_id=session.session_id)
        self._metrics.inc("voicegw_chat_messages_total")
        await ws.send_str(dumps({"type": "accepted", "id": session.seq}))
        await self._send_actions(ws, session, actions)

    async def _send_actions(self, ws: web.WebSocketResponse, session: "_Session", actions: list[Action]) -> None:
        for action in actions:
            frame = encode_action(action)
            if frame is not None:
                await ws.send_str(dumps(frame))


def _is_typing(raw: str) -> bool:
    if len(raw) > TYPING_FRAME_CHARS:
        return False
    try:
        return isinstance(parse_client_frame(raw, max_message_chars=TYPING_FRAME_CHARS), ClientTyping)
    except ChatProtocolError:
        return False


def _since(request: web.Request) -> int:
    """``?since=N``: the last ``seq`` the page saw (0 when absent or not a number)."""
    raw = request.query.get("since", "")
    return int(raw) if raw.isdigit() and len(raw) <= 12 else 0


def _text_of(raw: str) -> str:
    """The text of a message frame, for echoing a refused message back ('' if none)."""
    try:
        frame = parse_client_frame(raw, max_message_chars=len(raw))
    except ChatProtocolError:
        return ""
    return frame.text if isinstance(frame, ClientText) else ""


class _Session:
    """Per-socket state: the conversation, the core session (what the chat proved), a counter."""

    __slots__ = ("cid", "session_id", "seq")

    def __init__(self, cid: str, session_id: str) -> None:
        self.cid = cid
        self.session_id = session_id
        self.seq = 0
