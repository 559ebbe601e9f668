"""Assembling the gateway: the core from its parts, and ``voicegw serve`` / ``voicegw doctor``.

``build_core(settings)`` gives a ready ``Orchestrator`` (context store, journeys, NLU, CRM,
Rasa client). ``start_gateway(settings)`` builds the one :class:`Gateway` (the core, its CRM,
store and audit log, the shared ``Metrics``, the web server's parts, the voice pipeline) and
starts every enabled channel around it, handing each part what it needs explicitly.
``serve`` runs that until interrupted. A configured channel that cannot start (its port taken,
its engine missing) stops ``voicegw serve`` with exit status 1 and the reason, unless
``--keep-going``: then the others run and ``/healthz`` reports the failed one (HTTP 503) until
it is fixed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, TypeVar

from gateway.config import Settings
from gateway.context import AuditLog, ContextStore, open_audit, open_counters, open_store
from gateway.context.callbacks import open_callbacks
from gateway.context.dnc import open_do_not_call
from gateway.health import HealthBook
from gateway.metrics import Metrics
from gateway.core.outbound import OutboundPolicy
from gateway.core.verification import TrustServices
from gateway.core.dialog import DialogEngine
from gateway.core.journeys import load_journeys
from gateway.core.nlu import Nlu
from gateway.core.orchestrator import Orchestrator
from gateway.integrations.crm import Crm, open_crm

if TYPE_CHECKING:
    from gateway.voice.pipeline import VoicePipeline
    from gateway.web.app import WebRunner

log = logging.getLogger(__name__)
T = TypeVar("T")


async def build_core(settings: Settings, *, crm: Crm | None = None, store: ContextStore | None = None,
                     today: Callable[[], date] | None = None) -> Orchestrator:
    """The conversation core on the configured store, journeys, NLU, CRM and Rasa server (a CRM
    or a store given here is used instead of the configured one)."""
    settings.data_path(".").mkdir(parents=True, exist_ok=True)
    journeys = load_journeys(settings.project_path(settings.journeys.directory), DialogEngine.known_lookups())
    nlu = Nlu(journeys.intent_examples, threshold=settings.nlu.threshold)
    crm = crm if crm is not None else open_crm(settings)
    store = store if store is not None else open_store(settings)
    rasa = None
    if settings.rasa.action_server_url:
        from gateway.integrations.rasa import RasaActionClient

        rasa = RasaActionClient(settings.rasa.action_server_url, settings.rasa.timeout_seconds)
    counters = open_counters(settings)
    services = TrustServices(settings.trust, counters,
                             OutboundPolicy(settings.outbound, counters, open_do_not_call(settings)),
                             callbacks=open_callbacks(settings))
    engine = DialogEngine(journeys, nlu, crm, settings, services, rasa=rasa,
                          **({"today": today} if today is not None else {}))
    return Orchestrator(settings, store, engine, audit=open_audit(settings))


class Closeable(Protocol):
    async def close(self) -> None: ...


@dataclass
class Gateway:
    """One gateway: the conversation core and what ``voicegw serve`` builds around it, made here
    once and handed explicitly to each part that needs another (no part looks one up)."""

    settings: Settings
    core: Orchestrator
    metrics: Metrics = field(default_factory=Metrics)
    """The one ``/metrics`` every part reports to (served by the web server when it runs)."""
    health: HealthBook = field(default_factory=HealthBook)
    web: WebRunner | None = None
    pipeline: VoicePipeline | None = None
    closeables: list[Closeable] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def crm(self) -> Crm:
        return self.core.crm

    @property
    def store(self) -> ContextStore:
        return self.core.store

    @property
    def audit(self) -> AuditLog:
        if self.core.audit is None:
            raise ValueError("the core has no audit log")
        return self.core.audit

    async def close(self) -> None:
        for item in reversed(self.closeables):
            try:
                await item.close()
            except Exception:  # shutting down: report and go on closing the rest
                log.exception("error while closing %r", item)
        await self.core.close()

    # ------------------------------------------------------------------ starting parts
    def record_failure(self, name: str, error: str) -> None:
        log.error("%s did not start: %s", name, error)
        self.failed.append(f"{name}: {error}")
        self.health.failed_to_start(name, error)

    async def start_part(self, name: str, starter: Callable[[], Awaitable[T]]) -> T | None:
        """Start one part; a failure is recorded (``voicegw serve`` decides whether to run without it)."""
        try:
            result = await starter()
        except Exception as exc:  # recorded; voicegw serve decides whether the gateway runs without it
            self.record_failure(name, str(exc) or type(exc).__name__)
            return None
        items: list[Any] = list(result) if isinstance(result, list) else [result]
        self.closeables += [item for item in items if item is not None]
        self.started.append(name)
        for item in items:
            if item is not None:  # a part that reports its health names itself (audiosocket, fastagi, ...)
                self.health.started(name, item)
        return result


RunningGateway = Gateway  # the name ``start_gateway`` used to return


async def start_gateway(settings: Settings) -> Gateway:
    """Start the core and every enabled channel. Returns the :class:`Gateway` with what is
    running and what failed (``failed``, and ``health`` for ``/healthz``).

    The web server starts first: the voice side then gets its metrics and the agent desktop's
    screen-pop explicitly."""
    # a running node's store rides out Redis outages (its spool, gateway/context/outage.py)
    gateway = Gateway(settings, await build_core(settings, store=open_store(settings, node=True)))
    core, metrics = gateway.core, gateway.metrics
    from gateway.context.outage import BufferedStore

    if isinstance(core.store, BufferedStore):
        core.store.register_metrics(metrics)  # the outage gauges on /metrics
    if settings.web.enabled:
        from gateway.web.app import start_web

        gateway.web = await gateway.start_part("web", lambda: start_web(
            settings, core, store=gateway.store, crm=gateway.crm, audit=gateway.audit, metrics=metrics,
            health=gateway.health.report))
    web = gateway.web
    voice_channels = {"audiosocket": settings.audiosocket.enabled, "sip": settings.sip.enabled,
                      "fastagi": settings.fastagi.enabled, "ari": settings.ari.enabled,
                      "freeswitch": settings.freeswitch.enabled,
                      "twilio_media": settings.twilio_media.enabled and settings.web.enabled}
    if any(voice_channels.values()):
        from gateway.voice.pipeline import VoicePipeline

        async def start_voice() -> VoicePipeline:
            voice = VoicePipeline(settings, core)
            await voice.start()
            return voice

        gateway.pipeline = await gateway.start_part("voice pipeline", start_voice)
        if gateway.pipeline is None:  # every voice channel needs it: say so for each
            for name, enabled in voice_channels.items():
                if enabled and name != "twilio_media":
                    gateway.record_failure(name, "the voice pipeline did not start")
    pipeline = gateway.pipeline
    if pipeline is not None:
        pipeline.register_metrics(metrics)
        if web is not None:  # what a supervisor decides reaches the calls of this pipeline
            web.parts.human.voice(pipeline.deliver)
    if pipeline is not None and (settings.audiosocket.enabled or settings.fastagi.enabled or settings.ami.enabled
                                 or settings.ari.enabled):
        from gateway.telephony.asterisk import start_asterisk_channels

        parts: dict[str, str] = {}
        # when AMI sees the queue ring an agent, or the agent who answered, the desktop pops their screen
        answered = [web.agent_connected] if web is not None else []
        called = [web.agent_called] if web is not None else []
        await gateway.start_part("asterisk channels", lambda: start_asterisk_channels(
            settings, core, pipeline, synthesizer=pipeline.tts, failures=parts, metrics=metrics,
            agent_answered=answered, agent_called=called))
        for name, error in parts.items():
            gateway.record_failure(name, error)
    if pipeline is not None and settings.sip.enabled:
        from gateway.telephony.sip import start_sip_channel

        sip = await gateway.start_part("sip endpoint", lambda: start_sip_channel(settings, core, pipeline))
        if sip is not None:
            sip.register_metrics(metrics)
    if pipeline is not None and settings.freeswitch.enabled:
        from gateway.telephony.freeswitch_server import start_freeswitch_channel

        freeswitch = await gateway.start_part("freeswitch", lambda: start_freeswitch_channel(settings, core, pipeline))
        if freeswitch is not None:
            freeswitch.register_metrics(metrics)
            if settings.freeswitch.originate_enabled:
                from gateway.telephony.freeswitch_originate import start_freeswitch_originate

                await gateway.start_part("freeswitch originate", lambda: start_freeswitch_originate(
                    settings, core, freeswitch.port, node=pipeline.calls))
    if web is not None and pipeline is not None and settings.twilio_media.enabled:
        from gateway.telephony.twilio_media_server import attach_pipeline

        attach_pipeline(web.app, pipeline)
    if settings.rasa.serve_actions:
        from gateway.integrations.rasa_actions import start_action_server

        await gateway.start_part("rasa action server", lambda: start_action_server(
            settings, gateway.crm, settings.web.host, settings.rasa.actions_port))
    if gateway.started:  # beside channels only: a gateway with none stops (see _serve)
        await gateway.start_part("governance", lambda: start_governance(gateway))
    return gateway


async def start_governance(gateway: Gateway) -> list[Closeable]:
    """The jobs that run beside the channels: the retention purge, the QA sweep and, when webhooks
    are configured, the event publisher (what each returns is closed on shutdown)."""
    from gateway.analytics.source import journey_map
    from gateway.events_out.deliveries import open_deliveries
    from gateway.events_out.publisher import WebhookPublisher
    from gateway.governance.qa_job import QaSweep
    from gateway.governance.qa_store import open_qa_store
    from gateway.governance.retention import RetentionJob
    from gateway.governance.scorecards import load_scorecards

    settings, store, audit = gateway.settings, gateway.store, gateway.audit
    qa = open_qa_store(settings)
    deliveries = open_deliveries(settings)
    started: list[Closeable] = [qa, deliveries]
    sweep = QaSweep(settings, store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                    journey_map(settings))
    sweep.start()
    started.append(sweep)  # closed in reverse: the jobs first, then the stores they use
    if settings.retention.enabled:
        retention = RetentionJob(settings, store, audit, deliveries=deliveries, qa=qa)
        retention.start()
        started.append(retention)
    if settings.events_out.webhooks:
        if settings.context.backend == "redis" and not settings.events_out.redis_stream_max_len:
            raise ValueError("events_out.webhooks need the feed stream: set events_out.redis_stream_max_len above 0")
        publisher = WebhookPublisher(settings.events_out, store, deliveries)
        await publisher.start()
        started.append(publisher)
    return started


async def _serve(settings: Settings, keep_going: bool = False) -> int:
    running = await start_gateway(settings)
    for name in running.started:
        log.info("started: %s", name)
    if not running.started:
        log.error("nothing could be started")
        await running.close()
        return 1
    if running.failed and not keep_going:
        log.error("stopping: %s did not start (voicegw serve --keep-going runs without it)",
                  "; ".join(running.failed))
        await running.close()
        return 1
    for failure in running.failed:
        log.warning("running without %s (--keep-going); /healthz reports it", failure)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    web = settings.web
    degraded = f" WITHOUT {', '.join(f.split(':')[0] for f in running.failed)}" if running.failed else ""
    print(f"voicegw is running{degraded}. Web chat: http://{web.host}:{web.port}/chat  "
          f"agent desktop: http://{web.host}:{web.port}/agent  SMS outbox: http://{web.host}:{web.port}/outbox  "
          "(Ctrl-C stops)", flush=True)
    await stop.wait()
    await running.close()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    settings = settings_from(args)
    return asyncio.run(_serve(settings, keep_going=args.keep_going))


def _cmd_doctor(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from
    from gateway.doctor import run_doctor

    return run_doctor(settings_from(args), args.config)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start every enabled channel around one conversation core")
    p.add_argument("--keep-going", action="store_true",
                   help="run even when a configured channel cannot start (/healthz then reports it failing); "
                        "without it, such a failure stops voicegw serve with exit status 1")
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("doctor", help="check models, engines, ports and configuration; say how to fix what is missing")
    p.set_defaults(func=_cmd_doctor)
