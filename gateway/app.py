"""Assembling the gateway: the core from its parts, and ``voicegw serve`` / ``voicegw doctor``.

``build_core(settings)`` gives a ready ``Orchestrator`` (context store, journeys, NLU, CRM,
Rasa client). ``serve`` starts every enabled channel around that one core and runs until
interrupted. A configured channel that cannot start (its port taken, its engine missing) stops
``voicegw serve`` with exit status 1 and the reason, unless ``--keep-going``: then the others run
and ``/healthz`` reports the failed one (HTTP 503) until it is fixed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Settings
from gateway.context import open_audit, open_counters, open_store
from gateway.context.dnc import open_do_not_call
from gateway.health import HealthBook
from gateway.core.outbound import OutboundPolicy
from gateway.core.verification import TrustServices
from gateway.core.dialog import DialogEngine
from gateway.core.journeys import load_journeys
from gateway.core.nlu import Nlu
from gateway.core.orchestrator import Orchestrator
from gateway.integrations.crm import open_crm

log = logging.getLogger(__name__)


async def build_core(settings: Settings, *, crm: Any = None, store: Any = None, today: Any = None) -> Orchestrator:
    """The conversation core on the configured store, journeys, NLU, CRM and Rasa server."""
    settings.data_path(".").mkdir(parents=True, exist_ok=True)
    journeys = load_journeys(settings.project_path(settings.journeys.directory), DialogEngine.known_lookups())
    nlu = Nlu(journeys.intent_examples, threshold=settings.nlu.threshold)
    crm = crm if crm is not None else open_crm(settings)
    store = store if store is not None else open_store(settings)
    rasa = None
    if settings.rasa.action_server_url:
        from gateway.integrations.rasa import RasaActionClient

        rasa = RasaActionClient(settings.rasa.action_server_url, settings.rasa.timeout_seconds)
    kwargs = {"today": today} if today is not None else {}
    counters = open_counters(settings)
    services = TrustServices(settings.trust, counters,
                             OutboundPolicy(settings.outbound, counters, open_do_not_call(settings)))
    engine = DialogEngine(journeys, nlu, crm, settings, services, rasa=rasa, **kwargs)
    core = Orchestrator(settings, store, engine, audit=open_audit(settings))
    core.crm = crm  # type: ignore[attr-defined]
    return core


@dataclass
class RunningGateway:
    core: Orchestrator
    closeables: list[Any] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    health: HealthBook = field(default_factory=HealthBook)

    async def close(self) -> None:
        for item in reversed(self.closeables):
            try:
                await item.close()
            except Exception:  # shutting down: report and go on closing the rest
                log.exception("error while closing %r", item)
        await self.core.close()


async def start_gateway(settings: Settings) -> RunningGateway:
    """Start the core and every enabled channel. Returns what is running and what failed
    (``failed``, and ``health`` for ``/healthz``)."""
    # a running node's store rides out Redis outages (its spool, gateway/context/outage.py)
    core = await build_core(settings, store=open_store(settings, node=True))
    running = RunningGateway(core)

    def failed(name: str, error: str) -> None:
        log.error("%s did not start: %s", name, error)
        running.failed.append(f"{name}: {error}")
        running.health.failed_to_start(name, error)

    async def attempt(name: str, starter: Any) -> Any:
        try:
            result = await starter()
        except Exception as exc:  # recorded; voicegw serve decides whether the gateway runs without it
            failed(name, str(exc) or type(exc).__name__)
            return None
        items = result if isinstance(result, list) else [result]
        running.closeables += [item for item in items if item is not None]
        running.started.append(name)
        for item in items:
            if item is not None:  # a part that reports its health names itself (audiosocket, fastagi, ...)
                running.health.started(name, item)
        return result

    pipeline = None
    voice_channels = {"audiosocket": settings.audiosocket.enabled, "sip": settings.sip.enabled,
                      "fastagi": settings.fastagi.enabled, "ari": settings.ari.enabled,
                      "freeswitch": settings.freeswitch.enabled,
                      "twilio_media": settings.twilio_media.enabled and settings.web.enabled}
    if any(voice_channels.values()):
        from gateway.voice.pipeline import VoicePipeline

        async def start_voice() -> Any:
            nonlocal pipeline
            pipeline = VoicePipeline(settings, core)
            await pipeline.start()
            return pipeline

        await attempt("voice pipeline", start_voice)
        if pipeline is None:  # every voice channel needs it: say so for each
            for name, enabled in voice_channels.items():
                if enabled and name != "twilio_media":
                    failed(name, "the voice pipeline did not start")
    if pipeline is not None and (settings.audiosocket.enabled or settings.fastagi.enabled or settings.ami.enabled
                                 or settings.ari.enabled):
        from gateway.telephony.asterisk import start_asterisk_channels

        parts: dict[str, str] = {}
        await attempt("asterisk channels", lambda: start_asterisk_channels(settings, core, pipeline, failures=parts))
        for name, error in parts.items():
            failed(name, error)
    if pipeline is not None and settings.sip.enabled:
        from gateway.telephony.sip import start_sip_channel

        await attempt("sip endpoint", lambda: start_sip_channel(settings, core, pipeline))
    if pipeline is not None and settings.freeswitch.enabled:
        from gateway.telephony.freeswitch_server import start_freeswitch_channel

        await attempt("freeswitch", lambda: start_freeswitch_channel(settings, core, pipeline))
    if settings.web.enabled:
        from gateway.web.app import start_web

        web = await attempt("web", lambda: start_web(settings, core, store=core.store, crm=core.crm,
                                                     audit=core.audit, health=running.health.report))
        if web is not None and pipeline is not None and settings.twilio_media.enabled:
            from gateway.telephony.twilio_media_server import attach_pipeline

            attach_pipeline(web.app, pipeline)
    _wire_agent_answered(running, pipeline)
    _wire_sip_metrics(running)
    if settings.rasa.serve_actions:
        from gateway.integrations.rasa_actions import start_action_server

        await attempt("rasa action server", lambda: start_action_server(
            settings, core.crm, settings.web.host, settings.rasa.actions_port))
    if running.started:  # beside channels only: a gateway with none stops (see _serve)
        await attempt("governance", lambda: start_governance(settings, core))
    return running


async def start_governance(settings: Settings, core: Orchestrator) -> list[Any]:
    """The jobs that run beside the channels: the retention purge, the QA sweep and, when webhooks
    are configured, the event publisher (what each returns is closed on shutdown)."""
    from gateway.analytics.source import journey_map
    from gateway.events_out.deliveries import open_deliveries
    from gateway.events_out.publisher import WebhookPublisher
    from gateway.governance.qa_job import QaSweep
    from gateway.governance.qa_store import open_qa_store
    from gateway.governance.retention import RetentionJob
    from gateway.governance.scorecards import load_scorecards

    if core.audit is None:
        raise ValueError("the core has no audit log")
    store: Any = core.store
    qa = open_qa_store(settings)
    deliveries = open_deliveries(settings)
    started: list[Any] = [qa, deliveries]
    sweep = QaSweep(settings, store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                    journey_map(settings))
    sweep.start()
    started.append(sweep)  # closed in reverse: the jobs first, then the stores they use
    if settings.retention.enabled:
        retention = RetentionJob(settings, store, core.audit, deliveries=deliveries, qa=qa)
        retention.start()
        started.append(retention)
    if settings.events_out.webhooks:
        if settings.context.backend == "redis" and not settings.events_out.redis_stream_max_len:
            raise ValueError("events_out.webhooks need the feed stream: set events_out.redis_stream_max_len above 0")
        publisher = WebhookPublisher(settings.events_out, store, deliveries)
        await publisher.start()
        started.append(publisher)
    return started


def _wire_sip_metrics(running: RunningGateway) -> None:
    """The SIP channel's gauges, and the node store's (Redis outages), on the web server's ``/metrics``."""
    web = next((c for c in running.closeables if hasattr(c, "parts")), None)
    for item in [*running.closeables, running.core.store]:
        if web is not None and hasattr(item, "register_metrics"):
            item.register_metrics(web.parts.metrics)


def _wire_agent_answered(running: RunningGateway, pipeline: Any = None) -> None:
    """When AMI sees the queue ring an agent, or the agent who actually answered, the agent
    desktop pops that agent's screen; calls of ``pipeline`` hear what a supervisor decides."""
    from gateway.web.app import WebRunner

    web = next((c for c in running.closeables if isinstance(c, WebRunner)), None)
    if web is None:
        return
    for item in running.closeables:
        callbacks = getattr(item, "agent_callbacks", None)
        if isinstance(callbacks, list):
            callbacks.append(web.agent_connected)
        called = getattr(item, "agent_called_callbacks", None)
        if isinstance(called, list):
            called.append(web.agent_called)
    if pipeline is not None:
        web.parts.human.voice(pipeline.deliver)


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

    return run_doctor(settings_from(args), getattr(args, "config", None))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start every enabled channel around one conversation core")
    p.add_argument("--keep-going", action="store_true",
                   help="run even when a configured channel cannot start (/healthz then reports it failing); "
                        "without it, such a failure stops voicegw serve with exit status 1")
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("doctor", help="check models, engines, ports and configuration; say how to fix what is missing")
    p.set_defaults(func=_cmd_doctor)
