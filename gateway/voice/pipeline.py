"""VoicePipeline: the process-wide voice engines every call shares, and the factory of sessions.

One pipeline per gateway process holds the speech recognizer (its worker pool), the speech
synthesizer and the pool of VAD models; each call gets a light ``VoiceSession`` from
``session()``. Engines passed in by the caller are used as they are (the caller starts and
closes them); engines the pipeline builds itself from the settings are started by ``start()``
and closed by ``close()``. With its own synthesizer it also pre-synthesizes the journeys' fixed
prompts in the background while no call is in progress (``prompt_warmup.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.config import Settings
from gateway.core.port import ConversationPort
from gateway.health import ChannelHealth
from gateway.limits import SessionCap
from gateway.voice.cores import usable_cores
from gateway.voice.prompt_warmup import fixed_prompts, warm_prompts
from gateway.voice.port import CallControl, CallsFull, carry_out
from gateway.voice.session import VoiceSession
from gateway.voice.timing import TurnMetrics
from gateway.voice.vad import VadPool

log = logging.getLogger(__name__)

ASR_METRICS = {
    "voicegw_asr_cross_checks_total": "cross_checks",
    "voicegw_asr_cross_check_late_total": "cross_check_late",
    "voicegw_asr_cross_check_busy_total": "cross_check_busy",
    "voicegw_asr_open_engine_preferred_total": "open_engine_preferred",
    "voicegw_asr_fallbacks_total": "fallbacks",
    "voicegw_asr_whisper_restarts_total": "whisper_restarts",
}
"""``/metrics`` name -> ``AsrRouter.stats`` key."""
CALLS_PER_CORE = 12
"""Calls a node holds per usable core when ``voice.max_calls`` is 0: a bound, not a promise. On the
faster of the two-core machines this project was measured on, bench.voice_concurrency kept every
frame on time and open turns within 1.2 s at 24 calls; on one whose Whisper decodes took twice as
long, only at 12 (README). Past what the recognizers hold their queue makes every caller wait, so
an operator measures the node and sets ``voice.max_calls``; the default only keeps a node from
taking each voice server's ``max_sessions`` at once."""


def node_call_limit(max_calls: int) -> int:
    """``voice.max_calls``, or ``CALLS_PER_CORE`` per core this process may use when it is 0 (its
    affinity narrowed by a container's CPU quota: ``cores.usable_cores``)."""
    if max_calls > 0:
        return max_calls
    return CALLS_PER_CORE * usable_cores()


class VoicePipeline:
    """Shared ASR, TTS and VAD for every call of this process."""

    def __init__(
        self,
        settings: Settings,
        core: ConversationPort,
        *,
        asr: Any | None = None,
        tts: Any | None = None,
        vad_pool: VadPool | None = None,
    ):
        self.settings = settings
        self.core = core
        self.asr = asr
        self.tts = tts
        self._own_asr = asr is None
        self._own_tts = tts is None
        vad = settings.voice.vad
        self.vad_pool = vad_pool or VadPool(vad.engine, vad.webrtc_aggressiveness)
        self.sessions: dict[str, VoiceSession] = {}
        # every voice server's cap is within this one (``voice.max_calls``): a server takes a slot
        # when it admits a call, before it answers; servers without their own cap take it in session()
        self.calls = SessionCap("voice", node_call_limit(settings.voice.max_calls), setting="voice.max_calls")
        self.turn_metrics = TurnMetrics()
        self._warmup: asyncio.Task[None] | None = None
        self._controls: set[asyncio.Task[None]] = set()
        self._started = False

    async def start(self) -> None:
        """Build and start the engines not given to the constructor; load the VAD model."""
        if self._started:
            return
        voice = self.settings.voice
        if self.asr is None:
            from gateway.voice.asr import AsrRouter

            self.asr = AsrRouter(voice.asr, data_dir=self.settings.data_path(""))
        if self._own_asr:
            await self.asr.start()
        if self.tts is None:
            from gateway.voice.tts import Synthesizer

            self.tts = Synthesizer(voice.tts, cache_dir=self.settings.data_path(voice.tts.cache_dir))
        if self._own_tts and hasattr(self.tts, "start"):
            await self.tts.start()
        if self._own_tts and hasattr(self.tts, "warm_up"):
            await self.tts.warm_up()  # the first caller does not wait for the engine's first inference
        await self.vad_pool.prewarm()
        if voice.tts.presynthesize and self._own_tts:
            self._warmup = asyncio.create_task(self._warm_prompts(), name="prompt-warmup")
        self._started = True
        log.info("voice pipeline ready (vad %s, %d Hz)", self.vad_pool.engine, voice.sample_rate)

    async def _warm_prompts(self) -> None:
        voice = self.settings.voice
        try:
            texts = await asyncio.to_thread(fixed_prompts, self.settings.project_path(self.settings.journeys.directory))
        except (OSError, ValueError) as exc:  # bad journeys stop the core elsewhere; here they cost only the warm-up
            log.warning("prompt warm-up: journeys not read: %s", exc)
            return
        done = await warm_prompts(self.tts, texts, voice.sample_rate, lambda: bool(self.sessions))
        log.info("prompt warm-up: %d of %d fixed prompts ready at %d Hz", done, len(texts), voice.sample_rate)

    async def close(self) -> None:
        """Stop every open session, then close the engines this pipeline built."""
        if self._warmup is not None:
            self._warmup.cancel()
            await asyncio.gather(self._warmup, return_exceptions=True)
            self._warmup = None
        for session in list(self.sessions.values()):
            await session.stop("shutdown")
        self.sessions.clear()
        if self._own_asr and self.asr is not None:
            await self.asr.close()
        if self._own_tts and self.tts is not None and hasattr(self.tts, "close"):
            await self.tts.close()
        self._started = False

    def session(
        self,
        *,
        call_id: str,
        sample_rate: int = 8000,
        caller_id: str = "",
        dialed: str = "",
        conversation_id: str = "",
        control: CallControl | None = None,
        outbound: bool = False,
        channel: str = "voice",
        callback: str = "",
        attestation: str = "",
        admitted: bool = False,
    ) -> VoiceSession:
        """A new call's session (``await session.start()`` opens the conversation). ``admitted``:
        the call's server took its slot of ``voice.max_calls`` (``self.calls``) when it admitted
        the call and gives it back when the call ends; otherwise the session takes one here
        (``CallsFull`` when none is free) and gives it back when it closes."""
        if self.asr is None or self.tts is None:
            raise RuntimeError("VoicePipeline.start() must run before sessions are created")
        if not admitted:
            if not self.calls.admit():
                raise CallsFull(f"call {call_id} refused: {self.calls.refusal()}")
        try:
            session = VoiceSession(
                self,
                call_id=call_id,
                sample_rate=sample_rate,
                caller_id=caller_id,
                dialed=dialed,
                conversation_id=conversation_id,
                outbound=outbound,
                channel=channel,
                callback=callback,
                attestation=attestation,
            )
        except BaseException:
            if not admitted:
                self.calls.release()
            raise
        session.holds_slot = not admitted
        self.sessions[call_id] = session
        session.on_closed = self._forget
        if control is not None:
            task = asyncio.create_task(carry_out(session, control), name=f"control-{call_id}")
            self._controls.add(task)
            task.add_done_callback(self._controls.discard)
        return session

    async def deliver(self, conversation_id: str, actions: list[Any]) -> bool:
        """Hand ``actions`` to the call of ``conversation_id`` in this process; False when none has it."""
        for session in list(self.sessions.values()):
            if session.conversation_id == conversation_id and session.deliver(actions):
                return True
        return False

    def health(self) -> ChannelHealth:
        """For ``/healthz``: the calls held and the node's most (a full node is working: it refuses)."""
        return ChannelHealth("voice pipeline", True, f"{self.calls.active} of {self.calls.limit} calls ({self.calls.setting})")

    def register_metrics(self, metrics: Any) -> None:
        """Gauges on ``/metrics``: calls in the pipeline and what the recognizers did; the turn
        stage histograms and counters (``gateway/voice/timing.py``)."""
        metrics.gauge("voicegw_voice_calls", lambda: float(len(self.sessions)))
        metrics.gauge("voicegw_voice_calls_max", lambda: float(self.calls.limit))
        self.calls.register_metrics(metrics)
        for collector in self.turn_metrics.collectors():
            metrics.register(collector)
        for name, key in ASR_METRICS.items():
            metrics.gauge(name, lambda key=key: float(getattr(self.asr, "stats", {}).get(key, 0)))

    def _forget(self, session: VoiceSession) -> None:
        if self.sessions.get(session.call_id) is session:
            del self.sessions[session.call_id]
        if session.holds_slot:
            session.holds_slot = False
            self.calls.release()
