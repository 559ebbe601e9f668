"""The campaign API (JSON) on the gateway's web server, for supervisors and admins.

- ``GET  /api/campaigns``                      every campaign with its counts
- ``POST /api/campaigns``                      ``{"name": ..., "journey": ..., "calls_per_minute": ...}`` creates one
- ``GET  /api/campaigns/{name}``               its settings, contacts by status, attempts by outcome
- ``POST /api/campaigns/{name}/contacts``      a CSV body (``text/csv``) adds contacts (see ``csv_import``)
- ``POST /api/campaigns/{name}/start`` | ``/pause``
- ``GET  /api/campaigns/{name}/attempts?ref=&limit=``  the latest attempts and their outcome codes
- ``GET  /api/dnc?limit=``, ``POST /api/dnc`` ``{"number": ...}``: the do-not-call list;
  ``DELETE /api/dnc/{number}`` takes a number off it (admins only)

Authentication as the rest of the agent API (the desktop's cookie, or ``Authorization: Bearer``);
authorization by :func:`gateway.agents.access.authorize` (``MANAGE_CAMPAIGNS``,
``REMOVE_DO_NOT_CALL``). Every call, allowed or refused, is written to the audit log before
anything is done or shown; when the audit log cannot be written, nothing is (503). A request
with a session cookie from a foreign ``Origin`` is refused (403). With the Redis backend, a
node that does not hold the campaign runner lease answers 409 naming the node that does.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from gateway.agents.access import Permission, authorize
from gateway.agents.accounts import Principal
from gateway.agents.api import refused
from gateway.agents.signin import DeskAuth, client_address, same_origin
from gateway.config import Settings
from gateway.context.audit import AuditLog
from gateway.context.dnc import DoNotCall, number_key
from gateway.context.store import StoreError
from gateway.digital.campaigns.lease import RunnerLease
from gateway.digital.campaigns.manage import CampaignAdmin
from gateway.digital.campaigns.store import CampaignError

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_JSON_BYTES = 16 * 1024
"""A campaign's settings or a number fit in far less."""

Handler = Callable[[web.Request, Principal], Awaitable[web.Response]]


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


def _ok(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _limit(request: web.Request) -> int:
    try:
        limit = int(request.query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise CampaignError("limit must be a number from 1 to 1000")
    return limit


async def _json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # bounded by web.max_request_bytes
    if len(raw) > MAX_JSON_BYTES:
        raise CampaignError(f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise CampaignError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise CampaignError("the body must be a JSON object")
    return body


class CampaignApi:
    """Handlers of the campaign and do-not-call routes."""

    def __init__(self, settings: Settings, auth: DeskAuth, audit: AuditLog, admin: CampaignAdmin, dnc: DoNotCall,
                 *, lease: RunnerLease | None, node: str) -> None:
        self._settings = settings
        self._auth = auth
        self._audit = audit
        self._admin = admin
        self._dnc = dnc
        self._lease = lease
        self._node = node

    def routes(self, app: web.Application) -> None:
        add = app.router
        add.add_get("/api/campaigns", self._wrap("list", Permission.MANAGE_CAMPAIGNS, self._list))
        add.add_post("/api/campaigns", self._wrap("create", Permission.MANAGE_CAMPAIGNS, self._create))
        add.add_get("/api/campaigns/{name}", self._wrap("status", Permission.MANAGE_CAMPAIGNS, self._status))
        add.add_post("/api/campaigns/{name}/contacts", self._wrap("import", Permission.MANAGE_CAMPAIGNS, self._import))
        add.add_post("/api/campaigns/{name}/start", self._wrap("start", Permission.MANAGE_CAMPAIGNS, self._start))
        add.add_post("/api/campaigns/{name}/pause", self._wrap("pause", Permission.MANAGE_CAMPAIGNS, self._pause))
        add.add_get("/api/campaigns/{name}/attempts", self._wrap("attempts", Permission.MANAGE_CAMPAIGNS,
                                                                 self._attempts))
        add.add_get("/api/dnc", self._wrap("dnc_list", Permission.MANAGE_CAMPAIGNS, self._dnc_list))
        add.add_post("/api/dnc", self._wrap("dnc_add", Permission.MANAGE_CAMPAIGNS, self._dnc_add))
        add.add_delete("/api/dnc/{number}", self._wrap("dnc_remove", Permission.REMOVE_DO_NOT_CALL, self._dnc_remove))

    def _wrap(self, op: str, permission: Permission, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            attempt = await self._auth.principal(request)
            if attempt.principal is None:
                return refused(attempt)
            principal, address = attempt.principal, client_address(request)
            decision = authorize(principal, permission)
            target = request.match_info.get("name") or (
                "…" + number_key(request.match_info.get("number", ""))[-4:] if "number" in request.match_info else "")
            if op == "create":
                try:
                    target = str((await _json(request)).get("name", ""))[:64]
                except CampaignError:
                    target = ""
            detail = {"op": op, "target": target, "address": address, "reason": decision.reason}
            foreign = request.method != "GET" and not same_origin(request, self._settings.web.public_url)
            action = "campaign_refused" if not decision or foreign else f"campaign_{op}"
            try:
                await self._audit.write(actor=principal.name, role=principal.role.value, action=action, detail=detail)
            except (StoreError, ValueError) as exc:
                log.error("campaign API %s by %s not done: the audit log cannot be written (%s)", op, principal.name,
                          exc)
                return _error("the audit log cannot be written; nothing is done", 503)
            if foreign:
                log.warning("campaign API %s by %s refused: foreign origin %s", op, principal.name,
                            request.headers.get("Origin", ""))
                return _error("foreign origin", 403)
            if not decision:
                log.warning("campaign API %s refused to %s %s from %s", op, principal.role.value, principal.name,
                            address)
                return _error(decision.reason, 403)
            elsewhere = await self._elsewhere()
            if elsewhere:
                return _error(elsewhere, 409)
            try:
                return await handler(request, principal)
            except CampaignError as exc:
                status = 404 if str(exc).startswith("no campaign named") else 400
                return _error(str(exc), status)
            except StoreError as exc:
                log.error("campaign API %s failed: %s", op, exc)
                return _error("the campaign store cannot be reached right now", 503)

        return handle

    async def _elsewhere(self) -> str:
        """Why this node does not manage campaigns ('' when it does)."""
        if self._lease is not None and self._settings.context.backend == "redis":
            holder = await self._lease.holder()
            if holder and holder != self._node:
                return f"campaigns are run by node {holder}; use its API"
        return ""

    async def _list(self, request: web.Request, principal: Principal) -> web.Response:
        return _ok({"campaigns": await self._admin.overview()})

    async def _create(self, request: web.Request, principal: Principal) -> web.Response:
        body = await _json(request)
        name = str(body.pop("name", ""))
        campaign = await self._admin.create(name, body)
        log.info("campaign %s created by %s", campaign.name, principal.name)
        return _ok(await self._admin.status(campaign.name), status=201)

    async def _status(self, request: web.Request, principal: Principal) -> web.Response:
        return _ok(await self._admin.status(request.match_info["name"]))

    async def _import(self, request: web.Request, principal: Principal) -> web.Response:
        name = request.match_info["name"]
        text = await request.text()  # bounded by web.max_request_bytes
        report = await self._admin.import_csv(name, text)
        log.info("campaign %s: %d contacts imported by %s (%d duplicates, %d rejected)", name, report.added,
                 principal.name, report.duplicates, len(report.errors))
        return _ok(report.as_json())

    async def _start(self, request: web.Request, principal: Principal) -> web.Response:
        campaign = await self._admin.start(request.match_info["name"])
        log.info("campaign %s started by %s", campaign.name, principal.name)
        return _ok(await self._admin.status(campaign.name))

    async def _pause(self, request: web.Request, principal: Principal) -> web.Response:
        campaign = await self._admin.pause(request.match_info["name"])
        log.info("campaign %s paused by %s", campaign.name, principal.name)
        return _ok(await self._admin.status(campaign.name))

    async def _attempts(self, request: web.Request, principal: Principal) -> web.Response:
        items = await self._admin.attempts(request.match_info["name"], ref=request.query.get("ref", ""),
                                           limit=_limit(request))
        return _ok({"attempts": items})

    async def _dnc_list(self, request: web.Request, principal: Principal) -> web.Response:
        entries = await self._dnc.entries(_limit(request))
        return _ok({"entries": [e.__dict__ for e in entries]})

    async def _dnc_add(self, request: web.Request, principal: Principal) -> web.Response:
        body = await _json(request)
        number = str(body.get("number", ""))
        if not number_key(number):
            raise CampaignError("give a phone number, such as +15551234567")
        added = await self._dnc.add(number, source=f"api:{principal.name}")
        log.info("do-not-call: a number ending %s added by %s", number_key(number)[-4:], principal.name)
        return _ok({"added": added}, status=201 if added else 200)

    async def _dnc_remove(self, request: web.Request, principal: Principal) -> web.Response:
        number = request.match_info["number"]
        if not number_key(number):
            raise CampaignError("give a phone number, such as +15551234567")
        removed = await self._dnc.remove(number)
        log.warning("do-not-call: a number ending %s removed by %s", number_key(number)[-4:], principal.name)
        return _ok({"removed": removed}) if removed else _error("that number is not on the list", 404)
