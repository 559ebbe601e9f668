"""``/outbox``: the SMS the gateway sent and received, and (without Twilio) a reply form.

With no Twilio credentials the outbox is where SMS go, so this page is how a laptop user reads
them and answers as the customer would (``POST /outbox/reply``). It shows every customer's
messages (and their follow-up links), so it needs a signed-in supervisor or admin (the desktop's
session cookie; the embedded default's generated admin token signs in); each view is audited.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone

from aiohttp import web

from gateway.agents.access import Permission, Via, authorize
from gateway.agents.accounts import Principal
from gateway.agents.signin import DeskAuth, client_address
from gateway.config import Settings
from gateway.context.audit import AuditLog
from gateway.context.store import StoreError
from gateway.digital.outbox import Outbox
from gateway.digital.sms import SmsInbound
from gateway.pages import escape, page, refusal

log = logging.getLogger(__name__)

URL = re.compile(r"(https?://[^\s<]+)")
NUMBER = re.compile(r"^\+?[0-9]{3,16}$")


def _linkify(text: str) -> str:
    return URL.sub(lambda m: f"<a href=\"{m.group(1)}\">{m.group(1)}</a>", escape(text))


class OutboxPage:
    """Handlers for the outbox page and the local reply form."""

    def __init__(self, settings: Settings, outbox: Outbox, inbound: SmsInbound, auth: DeskAuth,
                 audit: AuditLog) -> None:
        self._settings = settings
        self._outbox = outbox
        self._inbound = inbound
        self._auth = auth
        self._audit = audit

    def _allowed(self, request: web.Request) -> tuple[Principal | None, web.Response | None]:
        principal = self._auth.session(request)
        if principal is None:
            return None, refusal("Outbox", "Sign in to the agent desktop first (/agent).", status=401)
        decision = authorize(principal, Permission.READ_OUTBOX)
        if not decision:
            log.warning("outbox refused to %s %s from %s", principal.role.value, principal.name, client_address(request))
            return None, refusal("Outbox", decision.reason, status=403)
        return principal, None

    async def show(self, request: web.Request) -> web.Response:
        """GET /outbox[?to=+1555...]."""
        principal, refused = self._allowed(request)
        if principal is None:
            assert refused is not None
            return refused
        try:
            await self._audit.write(actor=principal.name, role=principal.role.value, action="read_outbox",
                                    detail={"via": Via.PAGE.value, "address": client_address(request)})
        except StoreError as exc:
            log.error("outbox not shown: %s", exc)
            return refusal("Outbox", "The audit log cannot be written; nothing is shown.", status=503)
        to = request.query.get("to", "")
        rows = []
        for m in self._outbox.messages(to=to, limit=200):
            at = datetime.fromtimestamp(m.created_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            rows.append(f"<tr class=\"sms {escape(m.direction)}\"><td>{at}</td><td>{escape(m.direction)}</td>"
                        f"<td>{escape(m.to if m.direction == 'out' else m.sender)}</td>"
                        f"<td class=\"body\">{_linkify(m.body)}</td><td>{escape(m.transport)}</td>"
                        f"<td>{escape(m.status)}</td></tr>")
        table = ("<table id=\"outbox\"><thead><tr><th>when (UTC)</th><th>dir</th><th>number</th><th>message</th>"
                 "<th>via</th><th>status</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
        form = ""
        if self._inbound.transport_name == "outbox":
            form = ("<h2>Reply as the customer</h2><form method=\"post\" action=\"/outbox/reply\" id=\"reply\">"
                    f"<label>From<input name=\"from\" value=\"{escape(to)}\" required></label>"
                    "<label>Message<input name=\"body\" required maxlength=\"1600\"></label>"
                    "<button type=\"submit\">Send reply</button></form>")
        return page("SMS outbox", f"<p>Messages the gateway sent and received (newest first).</p>{table}{form}")

    async def reply(self, request: web.Request) -> web.Response:
        """POST /outbox/reply: an inbound SMS typed on the laptop (outbox mode only)."""
        if self._allowed(request)[0] is None or self._inbound.transport_name != "outbox":
            return refusal("Outbox", "Replies are taken from Twilio's webhook when Twilio is configured.", status=403)
        form = await request.post()
        number, body = str(form.get("from", "")).strip(), str(form.get("body", ""))
        if not NUMBER.match(number) or not body.strip():
            return refusal("Outbox", "Give a phone number such as +15551234567 and a message.", status=400)
        replies = await self._inbound.receive(number, body)
        for text in replies:
            self._outbox.record(direction="out", to=number, sender=self._settings.twilio.from_number, body=text,
                                conversation_id=self._outbox.thread_for(number, max_age_seconds=float("inf")),
                                transport="outbox", status="stored")
        raise web.HTTPSeeOther(f"/outbox?to={number.replace('+', '%2B')}")
