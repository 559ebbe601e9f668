"""The gateway's ``/metrics``: counters, gauges and histograms in the Prometheus text format.

Rendered by ``prometheus_client`` from one ``CollectorRegistry`` per ``Metrics`` object (not the
library's global registry: a test or a second gateway in one process gets its own series).
Counters and gauges keep the small API the channels use (``inc``, ``gauge``, ``value``): a dict of
``(name, labels) -> value`` collected at each scrape, every name in ``HELP`` announced even before
its first sample. Names ending in ``_total`` are counters, others gauges. Histograms (the voice
pipeline's per-stage turn timing, ``gateway/voice/timing.py``) are ``prometheus_client``
collectors added with ``register``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

disable_created_metrics()  # no ``*_created`` series beside every histogram: nothing here reads them

HELP: dict[str, str] = {
    "voicegw_http_requests_total": "HTTP requests served by the web server, by route and status",
    "voicegw_http_header_timeouts_total": "Web connections closed for a request head not received in time",
    "voicegw_sessions_refused_total": "New sessions refused because the server held its max_sessions (server=voice: the node held voice.max_calls), by server",
    "voicegw_chat_sessions_total": "Web chat sessions opened (new or resumed)",
    "voicegw_chat_messages_total": "Chat messages delivered to a conversation",
    "voicegw_chat_refused_total": "Chat frames refused, by reason",
    "voicegw_chat_sockets": "Web chat sockets open now",
    "voicegw_sms_sent_total": "SMS sent, by transport (twilio or outbox)",
    "voicegw_sms_failed_total": "SMS the provider refused or could not take",
    "voicegw_sms_received_total": "Inbound SMS delivered to a conversation",
    "voicegw_sms_webhook_refused_total": "Inbound SMS webhooks refused for a bad signature",
    "voicegw_twilio_refused_total": "Twilio voice webhooks, stream upgrades and stream parameters refused, by reason",
    "voicegw_links_issued_total": "Follow-up links issued",
    "voicegw_links_refused_total": "Follow-up links refused, by reason",
    "voicegw_links_completed_total": "Follow-up link pages completed",
    "voicegw_followups_total": "Follow-ups carried out, by channel",
    "voicegw_screenpops_total": "Screen-pops delivered to an agent desktop",
    "voicegw_screenpops_unrouted_total": "Screen-pops with no signed-in agent to receive them",
    "voicegw_agents_online": "Agent desktops connected now",
    "voicegw_sip_calls": "SIP calls in progress",
    "voicegw_sip_refused_total": "SIP calls refused (403, 486 and 503 at the gateway or its front)",
    "voicegw_sip_rtp_timeouts_total": "SIP calls hung up because their far end sent no RTP (sip.rtp_timeout_seconds)",
    "voicegw_sip_workers_alive": "SIP worker processes running",
    "voicegw_sip_worker_restarts_total": "SIP worker processes restarted after they died",
    "voicegw_outreach_total": "Outreach steps, by step (sms, answered, escalated)",
    "voicegw_voice_calls": "Calls in the voice pipeline now (every audio channel)",
    "voicegw_voice_calls_max": "Calls the node holds at once over every voice server (voice.max_calls); more are refused",
    "voicegw_asr_cross_checks_total": "Closed-set turns decoded by the grammar and Whisper at once",
    "voicegw_asr_cross_check_late_total": "Cross-checked turns answered by the grammar alone (Whisper too late)",
    "voicegw_asr_cross_check_busy_total": "Of those, turns whose check still waited in Whisper's queue behind other calls' (not waited for)",
    "voicegw_asr_open_engine_preferred_total": "Cross-checked turns where Whisper's answer replaced the grammar's",
    "voicegw_asr_fallbacks_total": "Closed-set answers decoded again by Whisper (cross-check off)",
    "voicegw_asr_whisper_restarts_total": "Whisper worker processes restarted",
    "voicegw_context_redis_up": "1 while this node writes to Redis; 0 during an outage (writes wait in its spool)",
    "voicegw_context_spool_waiting": "Writes in this node's outage spool not yet in Redis",
    "voicegw_context_outages_total": "Redis outages this node rode out (from its own copy and spool)",
    "voicegw_context_replayed_total": "Spooled writes replayed to Redis after an outage",
    "voicegw_context_replay_conflicts_total": "Spooled saves not written: another node saved the same conversation",
}

_Key = tuple[str, tuple[tuple[str, str], ...]]


class _Collector:
    """Presents the counters and gauges of one ``Metrics`` to its registry at each scrape."""

    def __init__(self, metrics: "Metrics") -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        with self._metrics._lock:
            items = sorted(self._metrics._values.items())
            gauges = dict(self._metrics._gauges)
        by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for (name, labels), value in items:
            by_name.setdefault(name, []).append((labels, value))
        for name in sorted(set(by_name) | set(HELP) | set(gauges)):
            help_text = HELP.get(name, name)
            kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            if name in gauges:
                yield kind(name, help_text, value=float(gauges[name]()))
                continue
            samples = by_name.get(name, [])
            label_names = sorted({k for labels, _v in samples for k, _ in labels})
            family = kind(name, help_text, labels=label_names)
            for labels, value in samples:
                present = dict(labels)
                family.add_metric([present.get(k, "") for k in label_names], value)
            yield family


class Metrics:
    """Thread-safe counters and gauges, and the histograms registered beside them, for ``/metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[_Key, float] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._registered: list[Any] = []

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with ``labels``."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Have ``name`` report ``read()`` at each scrape."""
        self._gauges[name] = read

    def register(self, collector: Any) -> None:
        """Add a ``prometheus_client`` collector (a ``Histogram``...) to this exposition, once."""
        if any(c is collector for c in self._registered):
            return
        self.registry.register(collector)
        self._registered.append(collector)

    def value(self, name: str, **labels: str) -> float:
        """Current value of one counter (0 when never incremented)."""
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        """The exposition text (format 0.0.4)."""
        return generate_latest(self.registry).decode("utf-8")
