"""The gateway's web server: chat, follow-up links, SMS webhook and outbox, agent desktop, REST,
``/healthz`` and ``/metrics``, all on ``settings.web`` (127.0.0.1:8080 by default).

``build_web_app(settings, core)`` assembles the aiohttp application around one conversation
core and registers the sinks the digital channels own (SendFollowUp, Transfer, ScreenPop); it
runs the reminders (outreach) and the campaign runner, and serves the campaign API.
``start_web(settings, core, ...)`` runs it and returns a :class:`WebRunner` (``port``,
``close()``) for ``voicegw serve``; its connections are bounded as :mod:`connection_guard`
says (header deadline, idle timeout, header size and count).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from gateway.agents.accounts import AccountBook
from gateway.agents.api import AgentApi
from gateway.agents.assignments import open_assignments
from gateway.agents.desktop import AgentDesktop
from gateway.agents.human_side import HumanSide
from gateway.agents.reads import ConversationReader
from gateway.agents.signin import DeskAuth
from gateway.agents.throttle import SignInThrottle, ThrottleLimits
from gateway.config import Settings
from gateway.context import AuditLog, open_audit, open_counters, open_fanout
from gateway.context.dnc import open_do_not_call
from gateway.context.fanout import Fanout
from gateway.context.store import ContextStore
from gateway.core.actions import ScreenPop, SendFollowUp, Transfer
from gateway.core.outbound import OutboundPolicy
from gateway.core.port import ConversationPort
from gateway.digital.chat import ChatChannel
from gateway.digital.campaigns import CAMPAIGNS_FILE, CampaignAdmin, Campaigns, CampaignStore
from gateway.digital.campaigns.api import CampaignApi
from gateway.digital.campaigns.lease import open_lease
from gateway.digital.campaigns.manage import journey_names
from gateway.digital.chat_relay import ChatRelay
from gateway.digital.followup import FollowUps
from gateway.digital.link_pages import LinkPages
from gateway.integrations.crm import Crm
from gateway.links import LinkSigner, load_or_create_secret
from gateway.digital.outbox import OUTBOX_FILE, Outbox
from gateway.digital.outbox_page import OutboxPage
from gateway.digital.booked_callbacks import BookedCallbacks
from gateway.digital.outreach import Outreach
from gateway.digital.sms import SmsInbound, SmsSender
from gateway.telephony.twilio_media_server import add_twilio_media_routes
from gateway.web.connection_guard import GuardedSockSite, HeaderDeadlines, handler_options
from gateway.web.governance_routes import add_governance_routes
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MULTIPART_OVERHEAD = 64 * 1024
"""Room for form boundaries and fields on top of the largest upload."""


@dataclass
class DigitalParts:
    """Everything the web app built, reachable from the app (``app[PARTS]``) and tests."""

    settings: Settings
    core: ConversationPort
    metrics: Metrics
    signer: LinkSigner
    outbox: Outbox
    sms: SmsSender
    sms_inbound: SmsInbound
    chat: ChatChannel
    followups: FollowUps
    links: LinkPages
    desktop: AgentDesktop
    fanout: Fanout
    outreach: Outreach | None
    audit: AuditLog
    human: HumanSide
    campaigns: Campaigns | None = None
    """The campaign runner (None without a context store); it ticks when ``campaigns.enabled``."""
    campaign_admin: CampaignAdmin | None = None
    booked_callbacks: BookedCallbacks | None = None
    """Places the callbacks customers booked instead of waiting (None when the core keeps none)."""


PARTS: web.AppKey[DigitalParts] = web.AppKey("voicegw_parts", DigitalParts)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _metrics_middleware(metrics: Metrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def count(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.inc("voicegw_http_requests_total", route=_route_name(request), status=str(exc.status))
            raise
        metrics.inc("voicegw_http_requests_total", route=_route_name(request), status=str(response.status))
        return response

    return count


def build_web_app(settings: Settings, core: ConversationPort, *, store: ContextStore | None = None,
                  crm: Crm | None = None, fanout: Fanout | None = None, audit: AuditLog | None = None,
                  metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
                  health: Callable[[], dict[str, Any]] | None = None) -> web.Application:
    """The aiohttp application serving every web surface of the gateway around ``core``.

    ``health`` (``voicegw serve`` passes its channels' :meth:`~gateway.health.HealthBook.report`)
    makes ``/healthz`` list every channel and answer 503 when one is failing; ``metrics`` is the
    gateway's one :class:`~gateway.metrics.Metrics` (served on ``/metrics``; a new one without).
    Without ``store`` there are no reminders' campaigns, journey dashboard or QA review; without
    ``crm`` no reminders.

    Agent accounts that cannot be used (a short configured token, a malformed hash) raise
    :class:`~gateway.agents.accounts.AccountError` here, before anything listens."""
    metrics = metrics if metrics is not None else Metrics()
    data_dir = settings.data_path(".")
    data_dir.mkdir(parents=True, exist_ok=True)
    book = AccountBook(settings)  # first: unusable accounts stop the start before any file is opened
    secret = load_or_create_secret(settings.links.secret, data_dir)
    redis_url = settings.context.redis_url if settings.context.backend == "redis" else ""
    signer = LinkSigner(secret, ttl_seconds=settings.links.ttl_minutes * 60, used_db=data_dir / "links.db",
                        used_redis_url=redis_url, clock=clock)
    outbox = Outbox(data_dir / OUTBOX_FILE, clock=clock, redaction=settings.redaction)
    sms = SmsSender(settings, outbox, metrics)
    sms_inbound = SmsInbound(settings, core, outbox, metrics)
    chat = ChatChannel(settings, core, signer, metrics)
    followups = FollowUps(settings, core, signer, sms, chat, metrics)
    links = LinkPages(settings, core, signer, metrics)
    own_fanout = fanout is None
    fanout = fanout if fanout is not None else open_fanout(settings)
    own_audit = audit is None
    audit = audit if audit is not None else open_audit(settings)
    assignments = open_assignments(settings)
    auth = DeskAuth(settings, book, signer, SignInThrottle(ThrottleLimits.from_settings(settings.agents)), audit,
                    metrics)
    reader = ConversationReader(core, assignments, audit, metrics)
    desktop = AgentDesktop(settings, auth, reader, fanout, metrics, STATIC_DIR)
    api = AgentApi(auth, reader)
    relay = followups.relay = ChatRelay(chat, fanout)
    # the core's outbound policy over the same shared budgets and do-not-call list, for what the
    # digital side sends on its own (reminder SMS)
    counters = open_counters(settings)
    dnc = open_do_not_call(settings)
    policy = OutboundPolicy(settings.outbound, counters, dnc)
    outreach = None
    if crm is not None:
        outreach = Outreach(settings, core, crm, sms, followups, metrics, db_path=data_dir / OUTBOX_FILE,
                            policy=policy)
        sms_inbound.listeners.append(outreach.on_sms_reply)
    campaign_store = CampaignStore(data_dir / CAMPAIGNS_FILE, busy_timeout_ms=settings.context.busy_timeout_ms)
    lease = open_lease(settings, campaign_store)
    campaign_admin = CampaignAdmin(settings, campaign_store, journey_names(settings))
    campaigns = None
    if store is not None:
        campaigns = Campaigns(settings, core, store, campaign_store, lease, policy=policy, sms=sms, followups=followups,
                              outbox=outbox, metrics=metrics)
    campaign_api = CampaignApi(settings, auth, audit, campaign_admin, dnc, lease=lease,
                               node=campaigns.node if campaigns is not None else "")
    human = HumanSide.build(settings, core, store, fanout, desktop, chat, audit, metrics, STATIC_DIR)
    scheduled = core.scheduled_callbacks
    booked = BookedCallbacks(core, scheduled, poll_seconds=settings.outreach.poll_seconds) if scheduled else None
    parts = DigitalParts(settings, core, metrics, signer, outbox, sms, sms_inbound, chat, followups, links,
                         desktop, fanout, outreach, audit, human, campaigns, campaign_admin, booked)

    core.register_sink(SendFollowUp, followups.sink)
    core.register_sink(Transfer, desktop.on_transfer)
    core.register_sink(ScreenPop, desktop.on_screen_pop)

    app = web.Application(client_max_size=settings.web.max_request_bytes + MULTIPART_OVERHEAD,
                          middlewares=[_metrics_middleware(metrics)])
    app[PARTS] = parts
    outbox_page = OutboxPage(settings, outbox, sms_inbound, auth, audit)

    async def healthz(request: web.Request) -> web.Response:
        report = health() if health is not None else {"status": "ok", "channels": {}}
        body = {**report, "sms": sms.transport, "agents_online": len(desktop.registry.agents())}
        return web.json_response(body, status=200 if report["status"] == "ok" else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    def static(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})
        return serve

    app.router.add_get("/", _to_chat)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/chat", static("chat.html"))
    app.router.add_get("/chat/embed.js", static("embed.js"))
    app.router.add_get("/chat/ws", chat.handle_ws)
    app.router.add_get("/l/{token}", links.show)
    app.router.add_post("/l/{token}", links.submit)
    app.router.add_post("/sms/twilio", sms_inbound.handle_webhook)
    app.router.add_get("/outbox", outbox_page.show)
    app.router.add_post("/outbox/reply", outbox_page.reply)
    app.router.add_get("/agent", desktop.desk)
    app.router.add_post("/agent/login", auth.login)
    app.router.add_post("/agent/logout", auth.logout)
    app.router.add_get("/agent/ws", desktop.socket)
    app.router.add_get("/api/conversations/{conversation_id}/context", api.context)
    app.router.add_get("/api/audit", api.audit)
    campaign_api.routes(app)
    human.add_routes(app)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    # /dashboard and /qa (supervisors): journey analytics and QA review over the core's store
    governance = add_governance_routes(app, settings, store, auth, audit, clock=clock)
    # /twilio/voice and /media/twilio (Media Streams); voicegw serve attaches the pipeline
    add_twilio_media_routes(app, settings, signer=signer, metrics=metrics)

    async def on_startup(app: web.Application) -> None:
        await desktop.start()
        await relay.start()
        await human.start()
        if outreach is not None and settings.outreach.enabled:
            outreach.start()
        if campaigns is not None and settings.campaigns.enabled:
            campaigns.start()
        if booked is not None:
            booked.start()

    async def on_cleanup(app: web.Application) -> None:
        if booked is not None:
            await booked.close()
        await human.close()
        await desktop.close()
        await relay.close()
        if outreach is not None:
            await outreach.close()
        if campaigns is not None:
            await campaigns.close()
        await lease.close()
        await campaign_store.close()
        if own_fanout:
            await fanout.close()
        await assignments.close()
        if governance is not None:
            await governance.close()
        if own_audit:
            await audit.close()
        signer.close()
        outbox.close()
        await policy.close()
        await counters.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _to_chat(request: web.Request) -> web.Response:
    raise web.HTTPFound("/chat")


class WebRunner:
    """A running web server: ``port`` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, app: web.Application, host: str, port: int) -> None:
        self._runner = runner
        self.app = app
        self.host = host
        self.port = port

    @property
    def parts(self) -> DigitalParts:
        return self.app[PARTS]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def agent_connected(self, conversation_id: str, agent_id: str) -> None:
        """For call control (AMI): ``agent_id`` (an account name, or an interface an account lists)
        answered the transferred call; record that it was routed to them and pop their screen."""
        await self.parts.desktop.agent_connected(conversation_id, agent_id)

    async def agent_called(self, conversation_id: str, agent_id: str) -> None:
        """For call control (AMI): the PBX rings ``agent_id``'s phone for this call: pop their desktop."""
        await self.parts.desktop.agent_called(conversation_id, agent_id)

    async def close(self) -> None:
        """Stop serving and release everything the app opened."""
        await self._runner.cleanup()


async def start_web(settings: Settings, core: ConversationPort, **deps: Any) -> WebRunner:
    """Serve the web app on ``settings.web.host:port``; ``deps`` go to :func:`build_web_app`.

    With port 0 (tests) the port is chosen first, and follow-up links point at it.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in settings.web.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.web.host, settings.web.port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    if settings.web.port == 0:
        web_settings = settings.web.model_copy(update={"public_url": f"http://{host}:{port}"})
        settings = settings.model_copy(update={"web": web_settings})
    try:
        app = build_web_app(settings, core, **deps)
    except BaseException:
        sock.close()
        raise
    deadlines = HeaderDeadlines(settings.web.header_timeout_seconds, metrics=app[PARTS].metrics)
    app.middlewares.insert(0, deadlines.middleware())  # outermost: it sees each request head arrive
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0,
                           **handler_options(settings.web.idle_timeout_seconds))
    await runner.setup()
    site = GuardedSockSite(runner, sock, deadlines)
    await site.start()
    web_runner = WebRunner(runner, app, host, port)
    log.info("web server on http://%s:%d (chat /chat, agent desktop /agent, metrics /metrics)", host, port)
    generated = web_runner.parts.desktop.book.generated_token_path
    if generated is not None:
        log.info("agent desktop: sign in at %s/agent with the admin token in %s",
                 settings.web.public_url.rstrip("/"), generated)
    return web_runner
