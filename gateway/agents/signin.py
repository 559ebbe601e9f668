"""Signing in to the agent desktop and recognising who a request comes from.

- ``POST /agent/login`` (form field ``token``) is the only way in for a browser. The answer is
  a ``303`` to ``/agent`` (a clean URL) with the session cookie: HttpOnly, SameSite=Strict,
  Secure when the gateway is served over HTTPS, signed and expiring (``agents.session_hours``;
  :class:`~gateway.links.LinkSigner` kind ``agent``). The cookie names the account and a
  fingerprint of its token hash, so removing or rotating the account ends its sessions.
- ``POST /agent/logout`` clears the cookie.
- ``Authorization: Bearer <token>`` is taken by the REST API (third-party desktops) and the
  desktop socket, checked against the same hashed tokens.
- A ``?token=`` in a URL is never accepted (URLs end up in logs, history and Referer headers).

Every attempt passes the :class:`~gateway.agents.throttle.SignInThrottle` first (429 with
``Retry-After`` when closed); sign-ins and refusals go to the audit log and the log line names
the account and address, never the token.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from html import escape
from urllib.parse import urlsplit

from aiohttp import web

from gateway.agents.accounts import AccountBook, Principal, SignInBusy
from gateway.agents.throttle import SignInThrottle
from gateway.agents.tokens import MAX_TOKEN_CHARS
from gateway.config import Settings
from gateway.context.audit import AuditLog
from gateway.context.store import StoreError
from gateway.links import LinkRefused, LinkSigner
from gateway.pages import page
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

COOKIE = "voicegw_agent"
MAX_FORM_BYTES = 4096
"""Largest sign-in form read (the token is at most 256 characters)."""

SIGN_IN_FORM = ("<form method=\"post\" action=\"/agent/login\" id=\"signin\"><label>Agent token"
                "<input name=\"token\" type=\"password\" required autocomplete=\"current-password\" "
                f"maxlength=\"{MAX_TOKEN_CHARS}\"></label>"
                "<button type=\"submit\">Sign in</button></form>")


@dataclass(frozen=True)
class Attempt:
    """The outcome of presenting a token: a principal, or the status and message of a refusal."""

    principal: Principal | None
    status: int = 200
    message: str = ""
    retry_after: float = 0.0
    fingerprint: str = ""
    until: float = 0.0
    """When this sign-in ends (wall clock): the cookie's expiry, or a session's length from now for a bearer token."""


def client_address(request: web.Request) -> str:
    return request.remote or "-"


def same_origin(request: web.Request, public_url: str) -> bool:
    """No Origin (not a browser's cross-site request), or ours."""
    origin = request.headers.get("Origin", "")
    return not origin or urlsplit(origin).netloc in (request.host, urlsplit(public_url).netloc)


class DeskAuth:
    """Sign-in, sign-out and the principal behind a request."""

    def __init__(self, settings: Settings, book: AccountBook, signer: LinkSigner, throttle: SignInThrottle,
                 audit: AuditLog, metrics: Metrics) -> None:
        self._settings = settings
        self.book = book
        self._signer = signer
        self.throttle = throttle
        self._audit = audit
        self._metrics = metrics
        self._session_seconds = settings.agents.session_hours * 3600
        self._secure = settings.web.public_url.startswith("https://")

    # ------------------------------------------------------------------ who is asking
    def _session(self, request: web.Request) -> Attempt | None:
        cookie = request.cookies.get(COOKIE, "")
        if not cookie:
            return None
        try:
            claims = self._signer.verify(cookie, kind="agent", check_used=False)
        except LinkRefused:
            return None
        account = self.book.get(claims.conversation_id)
        if account is None or account.fingerprint != claims.purpose:
            return None
        return Attempt(account.principal, fingerprint=account.fingerprint, until=claims.expires_at)

    def session(self, request: web.Request) -> Principal | None:
        """The principal of the request's session cookie, if it is valid and the account unchanged."""
        found = self._session(request)
        return found.principal if found is not None else None

    async def principal(self, request: web.Request, *, bearer: bool = True) -> Attempt:
        """Who sends ``request``: the session cookie, else (when ``bearer``) an Authorization header.
        No credentials at all is a 401; wrong ones a 403; too many wrong ones a 429."""
        found = self._session(request)
        if found is not None:
            return found
        auth = request.headers.get("Authorization", "")
        if bearer and auth[:7].lower() == "bearer ":
            return await self.attempt(request, auth[7:].strip(), via="bearer")
        return Attempt(None, 401, "sign in to the agent desktop (or send Authorization: Bearer <agent token>)")

    async def attempt(self, request: web.Request, token: str, *, via: str) -> Attempt:
        """Check ``token`` under the throttle; audit and log the outcome (never the token)."""
        address = client_address(request)
        claimed = self.book.claimed(token)
        verdict = self.throttle.check(address, claimed)
        if not verdict.allowed:
            self._metrics.inc("voicegw_agent_signins_throttled_total", why=verdict.why)
            return Attempt(None, 429, "too many failed sign-ins; try again later", verdict.retry_after)
        try:
            account = await self.book.check(token)
        except SignInBusy:
            self._metrics.inc("voicegw_agent_signins_throttled_total", why="busy")
            log.warning("agent sign-in from %s turned away: too many sign-ins being checked", address)
            return Attempt(None, 503, "too many sign-ins at once; try again in a second", 1.0)
        if account is None:
            after = self.throttle.failed(address, claimed)
            self._metrics.inc("voicegw_agent_signins_refused_total", via=via)
            log.warning("agent sign-in refused (%s, token not valid) for account %s from %s%s", via,
                        claimed or "-", address, f"; {after.why} closed for {after.retry_after:.0f} s"
                        if not after.allowed else "")
            await self._write_audit(claimed or "unknown", "none", "signin_refused",
                                    {"via": via, "address": address, "reason": "token not valid",
                                     "closed": after.why if not after.allowed else ""})
            return Attempt(None, 403, "that agent token is not valid")
        if via != "bearer":  # REST calls are audited as reads; a sign-in per call would drown them
            log.info("agent %s (%s) signed in from %s", account.name, account.role.value, address)
            await self._write_audit(account.name, account.role.value, "signin", {"via": via, "address": address})
        return Attempt(account.principal, fingerprint=account.fingerprint, until=time.time() + self._session_seconds)

    async def _write_audit(self, actor: str, role: str, action: str, detail: dict[str, str]) -> None:
        try:
            await self._audit.write(actor=actor, role=role, action=action, detail=detail)
        except StoreError as exc:
            log.error("audit log unavailable; %s of %s not recorded: %s", action, actor, exc)

    # ------------------------------------------------------------------ pages
    def sign_in_page(self, status: int, message: str, retry_after: float = 0.0) -> web.Response:
        headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if status in (429, 503) else None
        return page("Agent sign-in", f"<p class=\"refused\" id=\"refusal\">{escape(message)}</p>{SIGN_IN_FORM}",
                    status=status, headers=headers)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """POST /agent/login."""
        if not same_origin(request, self._settings.web.public_url):
            log.warning("agent sign-in refused: foreign origin from %s", client_address(request))
            return self.sign_in_page(403, "Sign in from the gateway's own page.")
        if request.content_length is None or request.content_length > MAX_FORM_BYTES:
            return self.sign_in_page(413, "Send the sign-in form with a length of at most 4 KiB.")
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not token.strip():
            return self.sign_in_page(400, "Enter your agent token.")
        result = await self.attempt(request, token.strip(), via="form")
        if result.principal is None:
            text = {403: "That agent token is not valid.",
                    503: "Too many sign-ins at once; try again in a second."}.get(
                result.status, "Too many failed sign-ins from here or for this account; try again later.")
            return self.sign_in_page(result.status, text, result.retry_after)
        response = web.HTTPSeeOther("/agent")
        cookie = self._signer.issue(result.principal.name, result.fingerprint, ttl_seconds=self._session_seconds,
                                    kind="agent")
        response.set_cookie(COOKIE, cookie, max_age=int(self._session_seconds), httponly=True, samesite="Strict",
                            secure=self._secure, path="/")
        response.headers["Cache-Control"] = "no-store"
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """POST /agent/logout."""
        who = self.session(request)
        response = web.HTTPSeeOther("/agent")
        response.del_cookie(COOKIE, path="/")
        if who is not None:
            log.info("agent %s signed out from %s", who.name, client_address(request))
            await self._write_audit(who.name, who.role.value, "signout", {"address": client_address(request)})
        raise response
