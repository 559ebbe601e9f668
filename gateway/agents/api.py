"""The agent-side REST API (JSON), for third-party desktops, CRMs and admins.

- ``GET /api/conversations/{id}/context``: a conversation's context, for whoever
  :func:`~gateway.agents.access.authorize` lets read it; every answer is audited.
- ``GET /api/audit?conversation_id=...&limit=...``: the audit log, newest first (admins).

Both take the desktop's session cookie or ``Authorization: Bearer <agent token>``. Refusals are
JSON: 401 without credentials, 403 with wrong ones or without the right, 429 while sign-in is
throttled, 404 for an unknown conversation, 503 when the audit log cannot be written (the
context is then not shown).
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.agents.access import Permission, Via, authorize
from gateway.agents.reads import ConversationReader, ReadRefused
from gateway.agents.signin import Attempt, DeskAuth, client_address
from gateway.context.audit import MAX_ENTRIES
from gateway.context.store import StoreError

log = logging.getLogger(__name__)

DEFAULT_AUDIT_LIMIT = 100


def refused(attempt: Attempt) -> web.Response:
    """The JSON answer to a request without a usable principal."""
    headers = {}
    if attempt.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    elif attempt.status == 429:
        headers["Retry-After"] = str(int(attempt.retry_after) + 1)
    return web.json_response({"error": attempt.message}, status=attempt.status, headers=headers)


class AgentApi:
    """Handlers of the REST API."""

    def __init__(self, auth: DeskAuth, reader: ConversationReader) -> None:
        self._auth = auth
        self._reader = reader

    async def context(self, request: web.Request) -> web.Response:
        """GET /api/conversations/{conversation_id}/context."""
        attempt = await self._auth.principal(request)
        if attempt.principal is None:
            return refused(attempt)
        cid = request.match_info["conversation_id"]
        try:
            context = await self._reader.read(attempt.principal, cid, via=Via.REST, address=client_address(request))
        except LookupError:
            return web.json_response({"error": f"no conversation {cid}"}, status=404)
        except ReadRefused as exc:
            return web.json_response({"error": exc.reason}, status=403)
        except StoreError as exc:
            log.error("context of conversation %s not shown: %s", cid, exc)
            return web.json_response({"error": "the audit log cannot be written; nothing is shown"}, status=503)
        return web.json_response(context, headers={"Cache-Control": "no-store"})

    async def audit(self, request: web.Request) -> web.Response:
        """GET /api/audit?conversation_id=...&limit=..."""
        attempt = await self._auth.principal(request)
        if attempt.principal is None:
            return refused(attempt)
        decision = authorize(attempt.principal, Permission.READ_AUDIT)
        if not decision:
            log.warning("audit log refused to %s %s from %s", attempt.principal.role.value, attempt.principal.name,
                        client_address(request))
            return web.json_response({"error": decision.reason}, status=403)
        try:
            limit = int(request.query.get("limit", DEFAULT_AUDIT_LIMIT))
            if not 1 <= limit <= MAX_ENTRIES:
                raise ValueError
        except ValueError:
            return web.json_response({"error": f"limit must be a number from 1 to {MAX_ENTRIES}"}, status=400)
        cid = request.query.get("conversation_id")
        try:
            entries = await self._reader.audit.entries(conversation_id=cid or None, limit=limit)
        except StoreError as exc:
            log.error("audit log unreadable: %s", exc)
            return web.json_response({"error": "the audit log cannot be read"}, status=503)
        return web.json_response({"entries": [e.as_json() for e in entries]}, headers={"Cache-Control": "no-store"})
