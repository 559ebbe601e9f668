"""The SIP channel as ``voicegw serve`` starts it: endpoint + ``Originate`` sink."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.config import Settings
from gateway.core.actions import Action, Originate
from gateway.telephony.call_outcomes import CallFailedReport, report_to_core, sip_outcome
from gateway.telephony.sip.endpoint import SipEndpoint
from gateway.telephony.sip.pool import SipWorkerPool
from gateway.telephony.sip.runtime import SipError
from gateway.voice.port import VoiceSessions

log = logging.getLogger(__name__)


class SipChannel:
    """A started SIP endpoint (in process) or worker pool (``sip.workers``); ``port`` is the
    bound SIP port, ``close()`` stops it."""

    def __init__(self, endpoint: SipEndpoint | SipWorkerPool, report: CallFailedReport | None = None) -> None:
        self.endpoint = endpoint
        self.report = report
        """Told of every call the sink placed that was not answered (``CallFailed`` to the core)."""
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        return self.endpoint.port

    async def originate_sink(self, conversation_id: str, action: Action) -> None:
        """Core sink for ``Originate``: place the call in the background, log the outcome."""
        if not isinstance(action, Originate):
            return
        conv = action.conversation_id or conversation_id
        task = asyncio.create_task(self._originate(action.number, conv, action.callback))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _originate(self, number: str, conversation_id: str, callback: str) -> None:
        try:
            await self.endpoint.originate(number, conversation_id, callback=callback)
        except (SipError, asyncio.TimeoutError) as exc:
            log.warning("outbound call to %s for conversation %s failed: %s", number, conversation_id, exc)
            if self.report is not None:
                outcome = sip_outcome(str(exc))
                await self.report(conversation_id, outcome.reason, outcome.detail)

    async def stats(self) -> dict[str, Any]:
        """Calls in progress, calls refused, registration and per-call media counters."""
        ep = self.endpoint
        media = await ep.media_stats() if isinstance(ep, SipWorkerPool) else ep.media_stats()
        out = {"calls": len(ep.legs), "rejected": ep.rejected, "registered": ep.registered.is_set(),
               "rtp_timeouts": ep.rtp_timeouts, "media": media}
        if isinstance(ep, SipWorkerPool):
            out["workers"] = ep.worker_stats()
            out["front"] = dict(ep.front.counters)
        else:
            out["ports_created"] = ep.ports_created
        return out

    def register_metrics(self, metrics: Any) -> None:
        """Gauges on ``/metrics``: calls in progress, calls refused, calls hung up for want of RTP,
        and the workers' health."""
        ep = self.endpoint
        metrics.gauge("voicegw_sip_calls", lambda: float(len(ep.legs)))
        metrics.gauge("voicegw_sip_refused_total", lambda: float(ep.rejected))
        metrics.gauge("voicegw_sip_rtp_timeouts_total", lambda: float(ep.rtp_timeouts))
        if isinstance(ep, SipWorkerPool):
            metrics.gauge("voicegw_sip_workers_alive",
                          lambda: float(sum(1 for w in ep.worker_stats() if w["alive"])))
            metrics.gauge("voicegw_sip_worker_restarts_total", lambda: float(ep.restarts))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.endpoint.close()


async def start_sip_channel(settings: Settings, core: Any, pipeline: VoiceSessions) -> SipChannel:
    """Start the SIP user agent (``settings.sip``; behind the SIP front with ``sip.workers``
    processes) with calls bridged to ``pipeline`` sessions, and carry out the core's
    ``Originate`` actions over it."""
    endpoint: SipEndpoint | SipWorkerPool
    if settings.sip.workers:
        endpoint = SipWorkerPool(settings.sip, pipeline)
    else:
        endpoint = SipEndpoint(settings.sip, pipeline)
    await endpoint.start()
    channel = SipChannel(endpoint, report_to_core(core) if core is not None else None)
    if core is not None:
        core.register_sink(Originate, channel.originate_sink)
    return channel
