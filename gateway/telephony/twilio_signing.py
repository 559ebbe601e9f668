"""Who may open a Twilio Media Stream, and which of its parameters the gateway vouches for.

Three layers, each closing a hole the one before leaves open:

1. **Exposure.** :func:`exposure` says whether the web server can be reached from beyond
   loopback: ``web.host`` is not 127.0.0.0/8, ``::1`` or ``localhost``, or ``web.public_url``
   (the address Twilio is given, typically a reverse proxy in front of 127.0.0.1) names another
   host. Exposed and without ``twilio.auth_token``, every Twilio route (voice webhook, stream
   upgrade, ``/after``) answers 403 and says which setting to set; ``voicegw doctor`` reports it.
2. **X-Twilio-Signature** (Twilio's own ``RequestValidator``, over ``web.public_url`` + path)
   on those routes whenever ``twilio.auth_token`` is set. On the voice webhook it proves the
   form (``From``, ``To``, ``CallSid``) comes from Twilio. On the stream upgrade it covers a
   constant URL (a ``<Stream url>`` carries no query string: Twilio passes values only as
   ``<Parameter>``), so it can be replayed by anyone who saw it once: needed, not sufficient.
3. **Signed parameters.** The voice webhook answers ``<Connect><Stream>`` TwiML whose
   ``<Parameter>`` elements carry ``from``, ``to``, ``call_sid`` (and ``conversation_id`` /
   ``outbound`` when the gateway itself sets them) plus ``voicegw_sig``: a gateway link token
   (:mod:`gateway.links`, kind ``twilio-stream``, HMAC-SHA256 under the links secret) holding an
   expiry (``twilio_media.parameters_ttl_seconds``), a nonce, and as its purpose the SHA-256 of
   exactly those values. At ``start`` the stream checks the token, that the visible values hash
   to its purpose, that the stream's ``callSid`` is the signed one, and consumes the nonce in the
   links' used-nonce record (SQLite, or Redis so a replay is refused on every node).
   Unsigned, forged, altered, expired, replayed or foreign parameters are refused.

The caller number reaches a voice session only from signed parameters, and the gateway signs
a caller number only when Twilio's signature vouched for the webhook that carried it: without
``twilio.auth_token`` (loopback, local development) the webhook signs an empty caller, and an
unsigned stream is served as an anonymous caller with every parameter ignored.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from aiohttp import web

from gateway.links import LinkRefused, LinkSigner

if TYPE_CHECKING:
    from gateway.config import TwilioMediaSettings
    from gateway.telephony.twilio_media import Start
    from gateway.metrics import Metrics

log = logging.getLogger(__name__)

STREAM_KIND = "twilio-stream"
"""Token kind of signed stream parameters: a follow-up link or a cookie never passes for one."""
PURPOSE_PREFIX = "twilio-stream:"
SIG_PARAM = "voicegw_sig"
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
"""Twilio's CallSid pattern (``^CA[0-9a-fA-F]{32}$`` in its 2010-04-01 API description)."""
MAX_NUMBER_CHARS = 128
"""Longest From/To the webhook signs: an E.164 number has 16 characters, a ``sip:`` or
``client:`` address a few dozen; longer is not a caller id."""

REFUSED_METRIC = "voicegw_twilio_refused_total"
REFUSAL_REASONS = {
    "forged": ("forged", "voicegw_sig does not match the links secret (forged, or another kind of token)"),
    "malformed": ("malformed", "voicegw_sig is not a gateway token"),
    "expired": ("expired", "the signed parameters have expired"),
    "used": ("replayed", "these signed parameters already opened a stream"),
    "unavailable": ("unavailable", "the record of used parameters cannot be reached"),
}
""":class:`LinkRefused` reason -> stream refusal reason and log detail (a used nonce is a replay)."""


class StreamRefused(Exception):
    """A stream's parameters cannot be honoured. ``reason``: unsigned, forged, malformed,
    altered, other-call, expired, replayed, unavailable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StreamClaims:
    """What a stream may tell its voice session. Unsigned: anonymous, nothing else."""

    caller: str = ""
    dialed: str = ""
    call_sid: str = ""
    conversation_id: str = ""
    outbound: bool = False
    signed: bool = False


ANONYMOUS = StreamClaims()


# --- exposure and Twilio's signature ------------------------------------------------------------
def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``; any other name or address is not."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(settings: Any) -> str:
    """Why the web server can be reached from beyond loopback, or "" when it cannot."""
    web_cfg = settings.web
    if not is_loopback_host(web_cfg.host):
        return f"web.host is {web_cfg.host or '(all addresses)'}"
    public = urlsplit(web_cfg.public_url).hostname or ""
    if public and not is_loopback_host(public):
        return f"web.public_url is {web_cfg.public_url}"
    return ""


def auth_token(settings: Any) -> str:
    return str(getattr(getattr(settings, "twilio", None), "auth_token", "") or "")


def websocket_url(url: str) -> str:
    """``https://`` -> ``wss://``, ``http://`` -> ``ws://``."""
    return "wss" + url[5:] if url.startswith("https") else "ws" + url[4:] if url.startswith("http") else url


def public_url(settings: Any, request: web.Request, websocket: bool = False) -> str:
    """The URL Twilio used (and signed) for ``request``: ``web.public_url`` + path."""
    base = settings.web.public_url.rstrip("/")
    return (websocket_url(base) if websocket else base) + request.path_qs


def twilio_signed(settings: Any, request: web.Request, url: str, params: Mapping[str, str]) -> bool:
    """True when ``X-Twilio-Signature`` matches ``url`` and ``params`` under the auth token."""
    token = auth_token(settings)
    if not token:
        return False
    from twilio.request_validator import RequestValidator

    signature = request.headers.get("X-Twilio-Signature", "")
    return bool(signature) and RequestValidator(token).validate(url, dict(params), signature)


# --- signed stream parameters -------------------------------------------------------------------
def _purpose(call_sid: str, caller: str, dialed: str, conversation_id: str, outbound: bool) -> str:
    canonical = json.dumps([call_sid, caller, dialed, conversation_id, outbound], separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return PURPOSE_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_stream_parameters(signer: LinkSigner, *, call_sid: str, caller: str, dialed: str,
                           conversation_id: str = "", outbound: bool = False,
                           ttl_seconds: float) -> dict[str, str]:
    """The ``<Parameter>`` name/values of one stream, with ``voicegw_sig`` binding them."""
    params = {"from": caller, "to": dialed, "call_sid": call_sid}
    if conversation_id:
        params["conversation_id"] = conversation_id
    if outbound:
        params["outbound"] = "true"
    params[SIG_PARAM] = signer.issue(conversation_id, _purpose(call_sid, caller, dialed, conversation_id, outbound),
                                     ttl_seconds=ttl_seconds, kind=STREAM_KIND)
    return params


def check_stream_parameters(signer: LinkSigner | None, params: Mapping[str, str], call_sid: str, *,
                            allow_unsigned: bool) -> StreamClaims:
    """The claims of a ``start`` message's ``customParameters``; :class:`StreamRefused` if none.

    Consumes the nonce: the same parameters are honoured once. Blocking (SQLite or Redis):
    call it off the event loop.
    """
    token = params.get(SIG_PARAM, "")
    if not token:
        if allow_unsigned:
            return ANONYMOUS
        raise StreamRefused("unsigned", "customParameters carry no voicegw_sig (TwiML not made by the gateway)")
    if signer is None:
        raise StreamRefused("unavailable", "this server has no link signer to check voicegw_sig")
    claims = StreamClaims(caller=params.get("from", ""), dialed=params.get("to", ""),
                          call_sid=params.get("call_sid", ""), conversation_id=params.get("conversation_id", ""),
                          outbound=params.get("outbound", "") == "true", signed=True)
    try:
        token_claims = signer.verify(token, kind=STREAM_KIND, check_used=False)
        if token_claims.purpose != _purpose(claims.call_sid, claims.caller, claims.dialed,
                                            claims.conversation_id, claims.outbound) \
                or token_claims.conversation_id != claims.conversation_id:
            raise StreamRefused("altered", "parameters differ from the ones the gateway signed")
        if claims.call_sid != call_sid:
            raise StreamRefused("other-call", f"parameters signed for call {claims.call_sid!r}")
        signer.consume(token, kind=STREAM_KIND)
    except LinkRefused as exc:
        reason, detail = REFUSAL_REASONS.get(exc.reason, REFUSAL_REASONS["forged"])
        raise StreamRefused(reason, f"{detail} (token {exc.token_id or '-'})") from None
    return claims


def stream_twiml(stream_url: str, action_url: str, parameters: Mapping[str, str]) -> str:
    """``<Connect action><Stream url>`` with one ``<Parameter>`` per entry (escaped by Twilio's
    own TwiML builder)."""
    from twilio.twiml.voice_response import Connect, VoiceResponse

    response = VoiceResponse()
    connect = Connect(action=action_url)
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


# --- the three layers on the routes -------------------------------------------------------------
class TwilioGate:
    """Applies exposure, Twilio's signature and signed parameters to the Twilio routes;
    refusals are logged and counted in ``voicegw_twilio_refused_total{reason}``."""

    def __init__(self, settings: Any, signer: LinkSigner | None, metrics: "Metrics") -> None:
        self.settings = settings
        self.signer = signer
        self.metrics = metrics
        self.token = auth_token(settings)
        self.exposed = exposure(settings)
        if self.exposed and not self.token and settings.twilio_media.enabled:
            log.warning("Twilio routes refuse every request: %s (beyond loopback) and twilio.auth_token is "
                        "empty; set twilio.auth_token (VOICEGW_TWILIO__AUTH_TOKEN)", self.exposed)

    @property
    def allow_unsigned(self) -> bool:
        """Only on loopback without a token: local development with hand-made TwiML."""
        return not self.exposed and not self.token

    def _refuse(self, request: web.Request, what: str, reason: str) -> web.HTTPForbidden:
        self.metrics.inc(REFUSED_METRIC, reason=reason)
        if reason == "no-auth-token":
            log.warning("Twilio %s from %s refused: %s (beyond loopback) and twilio.auth_token is empty; "
                        "set twilio.auth_token (VOICEGW_TWILIO__AUTH_TOKEN)", what, request.remote, self.exposed)
            return web.HTTPForbidden(text="forbidden: this gateway is reachable beyond loopback and has no "
                                          "twilio.auth_token; set it to accept Twilio requests\n")
        log.warning("Twilio %s from %s refused: bad or missing X-Twilio-Signature", what, request.remote)
        return web.HTTPForbidden(text="forbidden: request signature does not match\n")

    def authorize(self, request: web.Request, what: str, url: str, params: Mapping[str, str]) -> bool:
        """Raise 403 when exposed without a token or when the signature is wrong; True when
        Twilio's signature was checked (False: loopback without a token, nothing to check)."""
        if self.exposed and not self.token:
            raise self._refuse(request, what, "no-auth-token")
        if not self.token:
            return False
        if not twilio_signed(self.settings, request, url, params):
            raise self._refuse(request, what, "bad-signature")
        return True

    async def voice_webhook(self, request: web.Request, cfg: "TwilioMediaSettings", *, ready: bool) -> web.Response:
        """Twilio's incoming-call webhook: TwiML connecting the call to a stream whose
        parameters the gateway signed; the caller number only when Twilio's signature vouched."""
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        vouched = self.authorize(request, "voice webhook", public_url(self.settings, request), form)
        if not ready or self.signer is None:
            log.warning("Twilio voice webhook from %s refused: no voice pipeline is running", request.remote)
            raise web.HTTPServiceUnavailable(text="voice is not enabled on this gateway\n")
        call_sid, caller, dialed = form.get("CallSid", ""), form.get("From", ""), form.get("To", "")
        if not CALL_SID.fullmatch(call_sid) or max(len(caller), len(dialed)) > MAX_NUMBER_CHARS:
            log.warning("Twilio voice webhook from %s refused: CallSid %r, From or To not as Twilio sends them",
                        request.remote, call_sid[:40])
            raise web.HTTPBadRequest(text="bad request: CallSid, From and To as Twilio sends them\n")
        if not vouched:
            log.info("Twilio call %s: webhook not signed (no twilio.auth_token): caller treated as anonymous",
                     call_sid)
            caller = ""
        params = sign_stream_parameters(self.signer, call_sid=call_sid, caller=caller, dialed=dialed,
                                        ttl_seconds=cfg.parameters_ttl_seconds)
        base = self.settings.web.public_url.rstrip("/")
        twiml = stream_twiml(websocket_url(base) + cfg.path, base + cfg.path.rstrip("/") + "/after", params)
        log.info("Twilio call %s: connecting to a media stream", call_sid)
        return web.Response(text=twiml, content_type="text/xml")

    async def check(self, start: "Start", call_id: str, peer: str) -> StreamClaims | None:
        """The claims a ``start`` message may make, or None (logged and counted) when refused."""
        try:
            claims = await asyncio.to_thread(  # SQLite or Redis: off the loop that paces every call
                check_stream_parameters, self.signer, start.custom_parameters, start.call_sid,
                allow_unsigned=self.allow_unsigned)
        except StreamRefused as exc:
            self.metrics.inc(REFUSED_METRIC, reason=exc.reason)
            log.warning("Twilio call %s from %s: stream parameters refused (%s: %s); closing",
                        call_id, peer, exc.reason, exc.detail)
            return None
        if not claims.signed:
            log.info("Twilio call %s: parameters not signed by the gateway (loopback, no twilio.auth_token): "
                     "anonymous caller, parameters ignored", call_id)
        return claims
