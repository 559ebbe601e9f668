"""Voice-to-digital follow-ups: the sink that carries out the core's ``SendFollowUp``.

A journey step (during or after a call, or in a chat) asks for a follow-up on ``sms`` or
``chat``. The sink signs a link for the step's purpose (``/l/<token>``; ``/chat?c=<token>``
for the purpose ``chat``), then sends the text and link by SMS (Twilio or the outbox) or pushes
it to the open chat of the conversation (kept until the customer returns when none is open).
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.config import Settings
from gateway.core.actions import Action, SendFollowUp
from gateway.core.port import ConversationPort
from gateway.digital.chat import ChatChannel
from gateway.digital.chat_relay import ChatRelay
from gateway.links import LinkSigner
from gateway.digital.sms import SmsSender, SmsSendError
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

TEMPLATES: dict[str, str] = {
    "dispute_opened": "Your dispute case {case_id} is open. The disputed amount won't be due while we review it.",
    "appointment_rescheduled": "Your {appointment_kind} is now on {appointment_when} at {appointment_location}.",
    "loan_upload": "Upload the documents for your {loan_product} application here:",
    "order_tracking": "Your order {order_id} {order_status_text}. Details:",
    "password_reset": "Reset your password here (the link works once):",
    "upload_document": "Please upload your document here:",
    "complete_form": "Please complete this short form:",
    "confirm_payment": "Please confirm your payment here:",
    "continue_chat": "Continue our conversation in chat:",
}
"""Texts by template name, used when the action carries no text of its own; ``{slot}`` is
filled from the conversation's slots (a missing slot leaves the words around it)."""


class _Slots(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return ""


def render_template(template: str, slots: dict[str, Any]) -> str:
    """The text for ``template`` with the conversation's slots filled in."""
    text = TEMPLATES.get(template, "A message about your request:")
    return " ".join(text.format_map(_Slots(slots)).split()).replace(" .", ".")


def find_phone(context: dict[str, Any]) -> str:
    """The customer's phone number in a screen-pop context, or ''."""
    customer = context.get("customer") or {}
    if isinstance(customer, dict):
        for key in ("phone", "mobile", "phone_number", "number"):
            if customer.get(key):
                return str(customer[key])
    for key in ("caller_id", "phone", "number"):
        if context.get(key):
            return str(context[key])
    return ""


class FollowUps:
    """Signs follow-up links and delivers follow-up messages."""

    def __init__(self, settings: Settings, core: ConversationPort, signer: LinkSigner,
                 sms: SmsSender, chat: ChatChannel | None, metrics: Metrics) -> None:
        self._settings = settings
        self._core = core
        self._signer = signer
        self._sms = sms
        self._chat = chat
        self._metrics = metrics
        self.relay: ChatRelay | None = None

    def link_for(self, conversation_id: str, purpose: str, *, to_phone_on_file: bool = False) -> str:
        """A signed, expiring, single-use URL for ``purpose`` in the conversation.
        ``to_phone_on_file``: the link goes by SMS to the customer's phone on file, so opening it
        proves that phone (docs/trust.md); never set it for a number the customer gave."""
        token = self._signer.issue(conversation_id, purpose, proof="phone" if to_phone_on_file else "")
        self._metrics.inc("voicegw_links_issued_total")
        base = self._settings.web.public_url.rstrip("/")
        if purpose == "chat":
            return f"{base}/chat?c={token}"
        return f"{base}/l/{token}"

    async def sink(self, conversation_id: str, action: Action) -> None:
        """``core.register_sink(SendFollowUp, followups.sink)``."""
        if not isinstance(action, SendFollowUp):
            return
        cid = action.conversation_id or conversation_id
        # the core sends an sms follow-up only to the phone on file (gateway.core.steps._follow_up)
        by_sms_on_file = action.channel == "sms" and bool(action.to)
        url = action.link_url or (self.link_for(cid, action.link_purpose, to_phone_on_file=by_sms_on_file)
                                  if action.link_purpose else "")
        context: dict[str, Any] = {}
        if not action.text or not action.to:
            try:
                context = dict(await self._core.context(cid))
            except LookupError:
                context = {}
        text = action.text or render_template(action.template, dict(context.get("slots") or {}))
        if action.channel == "chat":
            if self._chat is None:  # no web chat here (the terminal): nothing to push into
                log.info("chat follow-up %s for conversation %s not delivered: no web chat", action.template, cid)
                return
            frame = {"type": "followup", "text": text, "url": url}
            delivered = await (self.relay.deliver(cid, frame) if self.relay else self._chat.push(cid, frame))
            self._metrics.inc("voicegw_followups_total", channel="chat")
            log.info("chat follow-up %s for conversation %s (%s)", action.template, cid,
                     "delivered" if delivered else "kept until the chat returns")
            return
        to = action.to or find_phone(context)
        if not to:
            log.warning("sms follow-up %s for conversation %s dropped: no phone number known",
                        action.template, cid)
            self._metrics.inc("voicegw_followups_total", channel="none")
            return
        try:
            await self._sms.send(to, f"{text} {url}".strip(), conversation_id=cid)
        except SmsSendError:
            return
        self._metrics.inc("voicegw_followups_total", channel="sms")
