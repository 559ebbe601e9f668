"""SMS: outbound through Twilio (or the local outbox), inbound through Twilio's webhook.

Outbound uses the official ``twilio`` client. ``settings.twilio.api_base_url`` points it at
another host (a spec-driven test server) through the client's documented ``http_client=``
extension point. With no credentials every message goes to the local outbox instead.

Inbound: Twilio POSTs ``From``, ``To``, ``Body`` to ``/sms/twilio`` signed with
``X-Twilio-Signature``; the signature is checked with ``twilio.request_validator`` against the
public URL of the webhook (``settings.web.public_url`` + path). A bad signature gets 403 and
nothing reaches a conversation. A good one is fed to the customer's conversation as
``ChatMessage(channel="sms")`` and the core's answer goes back as TwiML.

Opt-out: a message that is only one of :data:`STOP_WORDS` (STOP, UNSUBSCRIBE, CANCEL, END,
QUIT, and the CTIA's STOPALL, REVOKE, OPTOUT) reaches the conversation as ``OptOut(via="sms")``:
the core puts the number on the do-not-call list and confirms once (a repeated STOP gets no
reply, and a STOP from an unknown number gets no greeting). Twilio's own Advanced Opt-Out, when
enabled on the number, also answers STOP and blocks further messages at the carrier; the
gateway's list then still stops its calls.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Awaitable, Callable

from aiohttp import web
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from gateway.config import Settings
from gateway.core.events import CallAccepted, ChatMessage, ChatStarted, OptOut
from gateway.core.port import ConversationPort
from gateway.digital.chat_protocol import action_text
from gateway.digital.outbox import Outbox
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

TWILIO_API_HOST = "https://api.twilio.com"
MAX_SMS_CHARS = 1600
"""Twilio's limit for one message body (it splits into segments itself)."""

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT"})
"""SMS replies that opt the number out (the carriers' standard keywords, case and punctuation aside)."""
_NOT_LETTERS = re.compile(r"[^A-Z ]+")

InboundListener = Callable[[str, str, str], Awaitable[None]]
"""Called with (number, conversation_id, text) after an inbound SMS reached its conversation."""


TWILIO_TIMEOUT_SECONDS = 10.0
"""Longest wait for Twilio's API (the stock client waits forever by default)."""


class RebasedHttpClient(TwilioHttpClient):
    """The stock Twilio HTTP client with a timeout, sending to ``base_url`` (when given)
    instead of api.twilio.com."""

    def __init__(self, base_url: str = "", timeout: float = TWILIO_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.base_url and url.startswith(TWILIO_API_HOST):
            url = self.base_url + url[len(TWILIO_API_HOST):]
        return super().request(method, url, *args, **kwargs)


class SmsSendError(Exception):
    """Twilio refused or could not be reached; the message is kept in the outbox as failed."""


class SmsSender:
    """Sends one SMS through Twilio when configured, else stores it in the outbox."""

    def __init__(self, settings: Settings, outbox: Outbox, metrics: Metrics) -> None:
        self._settings = settings
        self._outbox = outbox
        self._metrics = metrics
        tw = settings.twilio
        self._client: Client | None = None
        if tw.account_sid and tw.auth_token:
            self._client = Client(tw.account_sid, tw.auth_token, http_client=RebasedHttpClient(tw.api_base_url))

    @property
    def transport(self) -> str:
        """``twilio`` or ``outbox``."""
        return "twilio" if self._client is not None else "outbox"

    async def send(self, to: str, body: str, *, conversation_id: str = "") -> str:
        """Send ``body`` to ``to``; returns the provider id (Twilio SID) or the outbox row id."""
        body = body[:MAX_SMS_CHARS]
        self._outbox.remember_thread(to, conversation_id)
        sender = self._settings.twilio.from_number
        if self._client is None:
            row = self._outbox.record(direction="out", to=to, sender=sender, body=body,
                                      conversation_id=conversation_id, transport="outbox",
                                      status="stored")
            self._metrics.inc("voicegw_sms_sent_total", transport="outbox")
            log.info("sms to %s stored in outbox (conversation %s)", to, conversation_id)
            return f"outbox-{row}"
        client = self._client
        try:
            message = await asyncio.to_thread(
                client.messages.create, to=to, from_=sender, body=body
            )
        except (TwilioException, OSError) as exc:
            self._outbox.record(direction="out", to=to, sender=sender, body=body,
                                conversation_id=conversation_id, transport="twilio", status="failed")
            self._metrics.inc("voicegw_sms_failed_total")
            log.warning("sms to %s failed (conversation %s): %s", to, conversation_id, exc)
            raise SmsSendError(str(exc)) from exc
        sid = str(message.sid or "")
        self._outbox.record(direction="out", to=to, sender=sender, body=body,
                            conversation_id=conversation_id, transport="twilio",
                            status=str(message.status or "queued"), provider_id=sid)
        self._metrics.inc("voicegw_sms_sent_total", transport="twilio")
        log.info("sms to %s sent via twilio sid=%s (conversation %s)", to, sid, conversation_id)
        return sid


def is_stop(text: str) -> bool:
    """Whether an SMS body is an opt-out keyword ("Stop", "STOP.", " unsubscribe ")."""
    return " ".join(_NOT_LETTERS.sub(" ", text.upper()).split()) in STOP_WORDS


def sms_session(number: str) -> str:
    """The core session of an SMS thread: one per phone number. A sender number is only a
    claim (it can be spoofed), but what the gateway texts back reaches the real number only."""
    return f"sms:{number}"


class SmsInbound:
    """Feeds inbound SMS to conversations; serves the Twilio webhook and the local reply form."""

    def __init__(self, settings: Settings, core: ConversationPort, outbox: Outbox, metrics: Metrics) -> None:
        self._settings = settings
        self._core = core
        self._outbox = outbox
        self._metrics = metrics
        self._validator = RequestValidator(settings.twilio.auth_token) if settings.twilio.auth_token else None
        self.listeners: list[InboundListener] = []

    async def receive(self, number: str, text: str) -> list[str]:
        """Deliver one SMS from ``number`` to its conversation; returns the reply texts."""
        text = text[: self._settings.chat.max_message_chars]
        window = self._settings.context.resume_window_minutes * 60.0
        cid = self._outbox.thread_for(number, max_age_seconds=window)
        self._outbox.record(direction="in", to=self._settings.twilio.from_number, sender=number,
                            body=text, conversation_id=cid, transport=self.transport_name,
                            status="received")
        replies: list[str] = []
        stop = is_stop(text)
        if stop:
            event: Any = OptOut(via="sms", number=number, channel="sms")
        elif text.strip().upper() == "CALL":
            event = CallAccepted(number=number, channel="sms")
        else:
            event = ChatMessage(text=text, channel="sms")
        actions: list[Any] | None = None
        for _ in range(2):
            if not cid:
                opened = await self._core.open(
                    "sms", caller_id=number, event=ChatStarted(channel="sms", customer_ref=number),
                    session_id=sms_session(number),
                )
                cid = opened.conversation_id
                if not opened.resumed and not stop:  # a STOP is answered with its confirmation only
                    replies.extend(t for t in map(action_text, opened.actions) if t)
            self._outbox.remember_thread(number, cid)
            try:
                actions = await self._core.handle(cid, event, session_id=sms_session(number))
                break
            except LookupError:  # the thread's conversation is gone (erased): start a new one
                log.info("sms thread of %s named a conversation no longer stored; starting a new one", number)
                cid = ""
        actions = actions or []
        replies.extend(t for t in map(action_text, actions) if t)
        self._metrics.inc("voicegw_sms_received_total")
        for listener in list(self.listeners):
            await listener(number, cid, text)
        return replies

    @property
    def transport_name(self) -> str:
        return "twilio" if self._validator is not None else "outbox"

    def _public_url(self, request: web.Request) -> str:
        return self._settings.web.public_url.rstrip("/") + request.path_qs

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """POST /sms/twilio: check the signature, feed the message, answer with TwiML."""
        signature = request.headers.get("X-Twilio-Signature", "")
        form = await request.post()
        params = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        url = self._public_url(request)
        if self._validator is None or not signature or not self._validator.validate(url, params, signature):
            self._metrics.inc("voicegw_sms_webhook_refused_total")
            log.warning("sms webhook refused: bad or missing X-Twilio-Signature from %s (url %s)",
                        request.remote, url)
            return web.Response(status=403, text="forbidden: request signature does not match\n")
        number = params.get("From", "")
        if not number:
            return web.Response(status=400, text="missing From\n")
        replies = await self.receive(number, params.get("Body", ""))
        twiml = MessagingResponse()
        cid = self._outbox.thread_for(number, max_age_seconds=float("inf"))
        for reply in replies:
            twiml.message(reply[:MAX_SMS_CHARS])
            self._outbox.record(direction="out", to=number, sender=params.get("To", ""), body=reply[:MAX_SMS_CHARS],
                                conversation_id=cid, transport="twiml", status="replied")
        return web.Response(text=str(twiml), content_type="application/xml")
