"""``/outbox``: the SMS the gateway sent and received, and (without Twilio) a reply form.

With no Twilio credentials the outbox is where SMS go, so this page is how a laptop user reads
them and answers as the customer would (``POST /outbox/reply``). When agent tokens are
configured the page needs a signed-in agent (it shows customers' messages); with none
configured (the embedded default) it is open, as the gateway listens on 127.0.0.1.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone

from aiohttp import web

from gateway.agents.desktop import AgentDesktop
from gateway.config import Settings
from gateway.digital.outbox import Outbox
from gateway.digital.sms import SmsInbound
from gateway.web.html import escape, page, refusal

log = logging.getLogger(__name__)

URL = re.compile(r"(https?://[^\s<]+)")
NUMBER = re.compile(r"^\+?[0-9]{3,16}$")


def _linkify(text: str) -> str:
    return URL.sub(lambda m: f"<a href=\"{m.group(1)}\">{m.group(1)}</a>", escape(text))


class OutboxPage:
    """Handlers for the outbox page and the local reply form."""

    def __init__(self, settings: Settings, outbox: Outbox, inbound: SmsInbound, desktop: AgentDesktop) -> None:
        self._settings = settings
        self._outbox = outbox
        self._inbound = inbound
        self._desktop = desktop

    def _allowed(self, request: web.Request) -> bool:
        token = request.query.get("token", "")
        return bool(self._desktop.agent_for_token(token) if token else self._desktop.session_agent(request))

    async def show(self, request: web.Request) -> web.Response:
        """GET /outbox[?to=+1555...]."""
        if not self._allowed(request):
            return refusal("Outbox", "Sign in to the agent desktop first (/agent).", status=401)
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
        if not self._allowed(request) or self._inbound.transport_name != "outbox":
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
