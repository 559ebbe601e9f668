"""The gateway's SIP user agent: answers and places calls, each bridged to a ``VoiceSession``.

Threads: pjsua2 runs on the runtime thread (``runtime.py``); methods named ``_pj_*`` run there
and reach the event loop only through ``call_soon_threadsafe``. Everything else runs on the loop
and reaches pjsua2 only through ``runtime.call``. Media frames cross through ``media.py``.

Modes (``settings.sip.mode``): ``register`` registers as an extension (digest auth, refreshed by
pjsip before expiry, unregistered on close); ``trunk`` accepts calls from ``peers`` (any address
when empty) and answers 403 to others. Calls beyond ``max_calls`` get 486 Busy Here.

A call whose far end stops sending RTP is hung up after ``rtp_timeout_seconds``
(``rtp_hold_timeout_seconds`` while it holds the call; see ``rtp_watch.py``), its session ended
with the reason ``rtp timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from gateway.core.actions import Transfer
from gateway.telephony.media_pacer import MediaPacer
from gateway.telephony.sip.call import CallLeg, PjCall, header_value, uri_host, uri_user
from gateway.telephony.sip.media import CallAudioPort, FrameBuffers, FrameSink
from gateway.telephony.sip.rtp_watch import CHECK_INTERVAL_S, RtpClock, RtpTimeouts, Verdict, read_rx
from gateway.telephony.sip.runtime import CALLS_PER_PROCESS, PjRuntime, SipError, guarded
from gateway.telephony.sip.ua_setup import account_config, create_transports, set_codec_priorities
from gateway.voice.port import CallAudio, VoiceSessions

if TYPE_CHECKING:
    from gateway.config import SipSettings  # a SIP worker is given them as a plain namespace (worker.worker_settings)

log = logging.getLogger(__name__)

JB_INIT_MS = 0
"""Caller audio held before playout starts on a new call (pjmedia's default prefetch is larger)."""
JB_MIN_PREFETCH_MS = 20
"""The least the adaptive jitter buffer keeps: one frame (pjmedia's default is 60 ms)."""
JB_MAX_PREFETCH_MS = 80
"""The most it grows to (pjmedia's default lets it reach 240 ms, which on a loaded host it did:
the caller's last word reached the endpointer a quarter of a second late)."""

TRANSFER_TIMEOUT_S = 15.0
"""How long a REFER may take to be accepted (202) and reported on (NOTIFY)."""
UNREGISTER_WAIT_S = 2.0
"""How long close waits for the registrar to confirm the unregistration."""
ATTESTATION_HEADER = "X-Attestation"
"""The STIR/SHAKEN attestation (A, B or C) a PBX in sip.peers verified for the call; see
dialplans/asterisk and docs/trust.md (believed only with trust.stir_shaken: possession)."""
RTP_TIMEOUT_REASON = "rtp timeout"
"""How a call hung up for want of RTP ended, as its session (and the conversation) records it."""


class _Account(pj.Account):
    def __init__(self, endpoint: SipEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint

    @guarded
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.endpoint._pj_incoming(prm)

    @guarded
    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        self.endpoint._pj_reg_state(prm.code, prm.reason, prm.expiration)


def peer_allowed(source: str, peers: tuple[str, ...]) -> bool:
    """Trunk mode: is ``source`` (``host:port``) one of ``peers`` (``host`` or ``host:port``)?"""
    if not peers:
        return True
    host = source.rsplit(":", 1)[0].strip("[]")
    return any(p == source or p.strip("[]") == host for p in peers)


class SipEndpoint:
    """The gateway's SIP user agent; ``pipeline`` provides each call's voice session."""

    def __init__(self, settings: SipSettings, pipeline: VoiceSessions, *, front: str = "",
                 register: bool = True) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.front = front  # behind the SIP front (a worker): its ``host:port``, already peer-checked
        self.register = register
        self.runtime = PjRuntime("gateway", configure=self._pj_configure, setup=self._pj_setup,
                                 teardown=self._pj_teardown)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.transports: dict[str, int] = {}
        self.ports: dict[str, int] = {}  # bound port per transport
        self.legs: dict[int, CallLeg] = {}
        self.registered = asyncio.Event()
        self.reg_code = 0
        self.rejected = 0
        self.rtp_timeouts = 0  # calls hung up because their far end sent no more RTP
        self._timeouts = RtpTimeouts(settings.rtp_timeout_seconds, settings.rtp_hold_timeout_seconds)
        self._rtp_watch: asyncio.Task[None] | None = None
        self._sink: FrameSink | None = None
        # Conference-bridge ports of ended calls, by sample rate, for the next calls: a port is
        # never destroyed while the endpoint runs, because pjmedia's clock thread can still be
        # inside its callbacks while Python takes the object apart (seen: a callback on a port
        # whose attributes were already gone, then the process died).
        self._spare_ports: dict[int, list[CallAudioPort]] = {}
        self.ports_created = 0
        self.pacer = MediaPacer("SIP")
        # runtime-thread state
        self._account: _Account | None = None
        self._calls: dict[int, PjCall] = {}
        self._closing = False
        self._unregistered = False

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the endpoint, its transports and its account (raises ``SipError``)."""
        self.loop = asyncio.get_running_loop()
        self._sink = FrameSink(self.loop)
        await self.loop.run_in_executor(None, self.runtime.start)
        try:
            await self.runtime.call(self._pj_add_account)
        except BaseException:
            await self.loop.run_in_executor(None, self.runtime.stop)
            raise
        if self._timeouts.enabled:
            self._rtp_watch = asyncio.create_task(self._watch_rtp())
        if self.settings.max_calls > CALLS_PER_PROCESS:
            log.warning("sip.max_calls is %d but this pjsua2 build holds %d calls per process; "
                        "further calls get 486 Busy Here (sip.workers runs more processes)",
                        self.settings.max_calls, CALLS_PER_PROCESS)
        log.info("SIP %s mode on %s:%d (%s)", self.settings.mode, self.settings.host, self.port,
                 ", ".join(self.transports))

    async def close(self) -> None:
        """Hang up every call, unregister, and destroy the endpoint."""
        legs = list(self.legs.values())
        for leg in legs:
            leg.local_hangup = True
        self._closing = True
        if self._rtp_watch is not None:
            self._rtp_watch.cancel()
        await self.pacer.close()
        if self.loop is not None:
            await self.loop.run_in_executor(None, self.runtime.stop)
        for leg in legs:
            await leg.end(0, "gateway shutting down")
        await asyncio.gather(*(leg.tasks.wait(timeout=10) for leg in legs))

    # ---- runtime thread: setup and teardown ----------------------------------------------------
    def _pj_configure(self, cfg: pj.EpConfig) -> None:
        cfg.uaConfig.maxCalls = self.settings.max_calls + 8  # room to answer 486 ourselves
        # The gateway is the only listener of the caller's audio, and a late frame costs it more
        # than a lost one (the end of the caller's turn is seen that much later): the jitter
        # buffer starts empty and may shrink to one frame (pjmedia's defaults hold 60 ms or more);
        # it still grows on a jittery line.
        cfg.medConfig.jbInit = JB_INIT_MS
        cfg.medConfig.jbMinPre = JB_MIN_PREFETCH_MS
        cfg.medConfig.jbMaxPre = JB_MAX_PREFETCH_MS

    def _pj_setup(self, ep: pj.Endpoint) -> None:
        set_codec_priorities(ep, self.settings.codecs)
        for name, (tid, bound) in create_transports(ep, self.settings).items():
            self.transports[name] = tid
            self.ports[name] = bound
            self.port = self.port or bound

    def _pj_add_account(self) -> None:
        self._account = _Account(self)
        contact = ""
        if self.front and self.settings.mode == "register":
            contact = f"<sip:{self.settings.username}@{self.front}>"
        self._account.create(account_config(self.settings, self.port, register=self.register, contact=contact),
                             True)

    def _pj_teardown(self, ep: pj.Endpoint) -> None:
        self._closing = True
        if self._calls:
            ep.hangupAllCalls()
            self.runtime.pump(2.0, until=lambda: not self._calls)
        for call in list(self._calls.values()):
            if call.port is not None:
                call.port.buffers.active = False
        self._calls.clear()
        for ports in self._spare_ports.values():
            for port in ports:
                self.runtime.retire(port)  # released before libDestroy, with the calls
        self._spare_ports.clear()
        acc = self._account
        if acc is not None:
            if self.settings.mode == "register" and self.register and self.reg_code // 100 == 2:
                try:
                    acc.setRegistration(False)
                    self.runtime.pump(UNREGISTER_WAIT_S, until=lambda: self._unregistered)
                except pj.Error as exc:
                    log.warning("SIP unregister failed: %s", exc.info())
            acc.shutdown()
            self._account = None

    # ---- runtime thread: callbacks -----------------------------------------------------------
    def _post(self, fn: Any, *args: Any) -> None:
        if self.loop is None:
            return
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed; the endpoint is going away

    def _pj_reg_state(self, code: int, reason: str, expiration: int) -> None:
        self.reg_code = code
        if expiration == 0 and code // 100 == 2:
            self._unregistered = True
        log.info("SIP registration: %d %s (expires %d s)", code, reason, expiration)
        self._post(self._on_reg_state, code, expiration)

    def _node_full(self) -> bool:
        """The node holds voice.max_calls calls over every voice server, counting this endpoint's
        calls whose session is not open yet (a SIP worker's stand-in pipeline has no such count:
        the gateway's SIP front checks it before the INVITE comes here)."""
        node = getattr(self.pipeline, "calls", None)
        if node is None:
            return False
        unopened = sum(1 for call in list(self._calls.values()) if call.leg is not None and call.leg.media is None)
        return bool(node.full or node.active + unopened >= node.limit)

    def _pj_incoming(self, prm: pj.OnIncomingCallParam) -> None:
        assert self._account is not None
        call = PjCall(self, self._account, prm.callId)
        info = call.getInfo()
        source = prm.rdata.srcAddress
        reject, why = 0, ""
        if self._closing:
            reject = 503
        elif (self.settings.mode == "trunk" and source != self.front
              and not peer_allowed(source, self.settings.peers)):
            reject = 403
        elif len(self._calls) >= self.settings.max_calls:
            reject, why = 486, " (sip.max_calls)"
        elif self._node_full():
            reject, why = 486, " (voice.max_calls: the node holds its most calls)"
        if reject:
            log.warning("call %s from %s (%s) rejected with %d%s", info.callIdString, source,
                        info.remoteUri, reject, why)
            op = pj.CallOpParam()
            op.statusCode = reject
            call.hangup(op)
            self.runtime.retire(call)
            self.rejected += 1
            return
        leg = CallLeg(
            self,
            sip_call_id=info.callIdString,
            remote_uri=info.remoteUri,
            caller_id=uri_user(info.remoteUri),
            dialed=uri_user(info.localUri),
            conversation_id=header_value(prm.rdata.wholeMsg, self.settings.conversation_header),
            # a STIR/SHAKEN verdict is believed only from the peers listed in sip.peers (the PBX)
            attestation=header_value(prm.rdata.wholeMsg, ATTESTATION_HEADER) if self.settings.peers else "",
        )
        leg.key = info.id
        call.leg = leg
        self._calls[info.id] = call
        self._post(self._on_leg_started, leg)
        log.info("call %s from %s (%s) ringing", leg.label, source, info.remoteUri)
        op = pj.CallOpParam()
        op.statusCode = 180
        call.answer(op)
        if self.settings.answer_delay_ms:
            self._post(self._answer_later, leg)
        else:
            self._pj_answer(leg)

    def _answer_later(self, leg: CallLeg) -> None:
        assert self.loop is not None
        self.loop.call_later(self.settings.answer_delay_ms / 1000, self.runtime.submit, self._pj_answer, leg)

    def _pj_answer(self, leg: CallLeg) -> None:
        call = self._calls.get(leg.key)
        if call is None or call.leg is not leg:
            return  # cancelled or ended while ringing
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)

    def _pj_make_call(self, uri: str, leg: CallLeg) -> int:
        assert self._account is not None
        if self._closing:
            raise SipError("the SIP endpoint is closing")
        if len(self._calls) >= self.settings.max_calls:
            raise SipError(f"busy: {len(self._calls)} calls in progress (sip.max_calls)")
        if self._node_full():  # not placed: its session would be refused when the callee answers
            raise SipError("busy: the node holds its most calls (voice.max_calls)")
        call = PjCall(self, self._account)
        call.leg = leg
        op = pj.CallOpParam(True)
        if leg.conversation_id:
            hdr = pj.SipHeader()
            hdr.hName = self.settings.conversation_header
            hdr.hValue = leg.conversation_id
            op.txOption.headers.append(hdr)
        try:
            call.makeCall(uri, op)
        except pj.Error:
            self.runtime.retire(call)
            raise
        info = call.getInfo()
        leg.key = info.id
        leg.sip_call_id = info.callIdString
        self._calls[info.id] = call
        return info.id

    def _pj_call_state(self, call: PjCall) -> None:
        info = call.getInfo()
        leg = call.leg
        if leg is None:
            return
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            if call.rtp is None:
                call.rtp = RtpClock(time.monotonic())  # no RTP from here on counts
            self._post(self._on_confirmed, leg)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            if call.port is not None:
                call.port.buffers.active = False
                self._spare_ports.setdefault(call.port.buffers.sample_rate, []).append(call.port)
                call.port = None
            self._calls.pop(info.id, None)
            self.runtime.retire(call)
            log.info("call %s ended: %d %s", leg.label, info.lastStatusCode, info.lastReason)
            self._post(self._on_disconnected, leg, info.lastStatusCode, info.lastReason)

    def _pj_media_state(self, call: PjCall) -> None:
        info = call.getInfo()
        leg = call.leg
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            audio = call.getAudioMedia(media.index)
            stream = call.getStreamInfo(media.index)
            rate = 16000 if stream.codecClockRate >= 16000 else 8000
            if call.port is None:
                buffers = FrameBuffers(leg.label if leg else str(info.id), rate)
                spare = self._spare_ports.get(rate)
                if spare:
                    port = spare.pop()
                    port.buffers = buffers  # the clock thread reads it afresh at every frame
                else:
                    port = CallAudioPort(buffers, self._sink)
                    port.create()
                    self.ports_created += 1
                call.port = port
                log.info("call %s media: %s/%d", buffers.call_id, stream.codecName, stream.codecClockRate)
                if leg is not None:
                    self._post(self._on_media_ready, leg, buffers)
            elif call.port.buffers.sample_rate != rate:
                log.warning("call %s: codec changed to %s/%d mid-call; audio is resampled by the bridge",
                            leg.label if leg else info.id, stream.codecName, stream.codecClockRate)
            audio.startTransmit(call.port)
            call.port.startTransmit(audio)
            return

    def _pj_dtmf(self, call: PjCall, digit: str) -> None:
        leg = call.leg
        if leg is not None:
            self._post(self._on_dtmf, leg, digit)

    def _pj_transfer_status(self, call: PjCall, code: int, reason: str, final: bool) -> None:
        leg = call.leg
        if leg is not None:
            log.info("call %s transfer status %d %s%s", leg.label, code, reason, " (final)" if final else "")
            self._post(self._on_transfer_status, leg, code)

    def _pj_hangup(self, key: int, code: int) -> None:
        call = self._calls.get(key)
        if call is None:
            return
        op = pj.CallOpParam()
        op.statusCode = code
        call.hangup(op)

    def _pj_check_rtp(self) -> list[tuple[CallLeg, Verdict]]:
        """The confirmed calls whose far end has sent no RTP for longer than allowed."""
        now = time.monotonic()
        out: list[tuple[CallLeg, Verdict]] = []
        for call in list(self._calls.values()):
            clock, leg = call.rtp, call.leg
            if clock is None or leg is None:
                continue
            try:
                verdict = clock.observe(now, read_rx(call, clock.packets), self._timeouts)
            except pj.Error:
                continue  # the call is being torn down
            if verdict is not None:
                out.append((leg, verdict))
        return out

    def _pj_xfer(self, key: int, uri: str, header: str, conversation_id: str) -> None:
        call = self._calls.get(key)
        if call is None:
            raise SipError("the call has already ended")
        op = pj.CallOpParam(True)
        dest = uri
        if conversation_id:
            hdr = pj.SipHeader()
            hdr.hName = header
            hdr.hValue = conversation_id
            op.txOption.headers.append(hdr)
            # also embedded in Refer-To, so the INVITE towards the agent carries it
            sep = "&" if "?" in uri else "?"
            dest = f"{uri}{sep}{header}={urllib.parse.quote(conversation_id, safe='')}"
        call.xfer(f"<{dest}>", op)

    # ---- loop: call lifecycle ----------------------------------------------------------------
    async def _watch_rtp(self) -> None:
        """Every ``CHECK_INTERVAL_S``: hang up the calls whose far end sends no more RTP."""
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            if not self.runtime.running:
                return
            try:
                found = await self.runtime.call(self._pj_check_rtp)
            except (SipError, asyncio.TimeoutError) as exc:
                log.warning("SIP RTP check failed: %s", exc or type(exc).__name__)
                continue
            for leg, verdict in found:
                self._rtp_timed_out(leg, verdict)

    def _rtp_timed_out(self, leg: CallLeg, verdict: Verdict) -> None:
        if leg.closed.is_set():
            return
        self.rtp_timeouts += 1
        log.warning("call %s: no RTP from the far end for %.0f s%s; hanging up (%s)", leg.label, verdict.idle,
                    " while it holds the call" if verdict.held else "", RTP_TIMEOUT_REASON)
        if leg.media is not None:
            leg.media.close(RTP_TIMEOUT_REASON)  # the session stops with this reason; the wire sends BYE
        else:
            leg.tasks.spawn(self.hangup(leg, RTP_TIMEOUT_REASON))

    def _on_reg_state(self, code: int, expiration: int) -> None:
        if code // 100 == 2 and expiration > 0:
            self.registered.set()
        else:
            self.registered.clear()

    def _on_leg_started(self, leg: CallLeg) -> None:
        self.legs[leg.key] = leg

    def _on_confirmed(self, leg: CallLeg) -> None:
        leg.confirmed = True
        if leg.outbound and leg.buffers is not None and leg.media is None:
            leg.start_session(self.pipeline, self.pacer)

    def _on_media_ready(self, leg: CallLeg, buffers: FrameBuffers) -> None:
        leg.buffers = buffers
        if leg.media is None and (not leg.outbound or leg.confirmed):
            leg.start_session(self.pipeline, self.pacer)

    def _on_dtmf(self, leg: CallLeg, digit: str) -> None:
        log.info("call %s: DTMF key pressed", leg.label)  # never which: it may be a PIN
        leg.key_pressed(digit)

    def _on_transfer_status(self, leg: CallLeg, code: int) -> None:
        try:
            leg.transfer_status.put_nowait(code)
        except asyncio.QueueFull:
            pass

    def _on_disconnected(self, leg: CallLeg, code: int, reason: str) -> None:
        self.legs.pop(leg.key, None)
        leg.tasks.spawn(leg.end(code, reason))

    # ---- loop: public operations -------------------------------------------------------------
    def target_uri(self, target: str) -> str:
        """A SIP URI for a number or URI (``sip.outbound_uri`` is the template for numbers)."""
        s = self.settings
        if target.startswith(("sip:", "sips:")):
            return target
        if "@" in target:
            return "sip:" + target
        if s.outbound_uri:
            return s.outbound_uri.format(number=target)
        if s.mode == "register" and (s.domain or s.registrar):
            return f"sip:{target}@{s.domain or uri_host(s.registrar)}"
        if s.peers:
            return f"sip:{target}@{s.peers[0]}"
        raise SipError(f"no route for {target!r}: set sip.outbound_uri, e.g. sip:{{number}}@pbx")

    async def originate(self, target: str, conversation_id: str = "", *, timeout: float = 60.0,
                        callback: str = "") -> CallAudio:
        """Place a call that continues ``conversation_id``; returns its started voice session.
        ``callback`` is the core's nonce for this call, handed back when the session opens."""
        uri = self.target_uri(target)
        leg = CallLeg(self, remote_uri=uri, caller_id=uri_user(uri) or target, outbound=True,
                      conversation_id=conversation_id, callback=callback)
        assert self.loop is not None
        leg.answered = self.loop.create_future()
        key = await self.runtime.call(self._pj_make_call, uri, leg)
        self.legs.setdefault(key, leg)
        log.info("call %s to %s placed (conversation %s)", leg.label, uri, conversation_id or "-")
        try:
            return await asyncio.wait_for(asyncio.shield(leg.answered), timeout)
        except asyncio.TimeoutError:
            await self.hangup(leg, "no answer")
            raise SipError(f"call to {uri} not answered within {timeout:.0f} s") from None

    async def hangup(self, leg: CallLeg, reason: str) -> None:
        """End one call (BYE after answer, 480/CANCEL before)."""
        if leg.closed.is_set() or leg.key < 0:
            return
        leg.local_hangup = True
        log.info("call %s: hanging up (%s)", leg.label, reason)
        try:
            await self.runtime.call(self._pj_hangup, leg.key, 603 if leg.outbound else 480)
        except (SipError, asyncio.TimeoutError) as exc:
            log.warning("call %s: hangup failed: %s", leg.label, exc)

    async def transfer(self, leg: CallLeg, conversation_id: str, action: Transfer) -> bool:
        """Blind REFER to ``sip.transfer_uri`` carrying the conversation id in a header."""
        uri = self.settings.transfer_uri
        if not uri:
            log.warning("call %s: transfer to %s asked but sip.transfer_uri is empty", leg.label, action.queue)
            return False
        while not leg.transfer_status.empty():
            leg.transfer_status.get_nowait()
        try:
            await self.runtime.call(self._pj_xfer, leg.key, uri, self.settings.conversation_header,
                                    conversation_id)
        except (SipError, asyncio.TimeoutError) as exc:
            log.warning("call %s: REFER failed: %s", leg.label, exc)
            return False
        accepted = False
        deadline = time.monotonic() + TRANSFER_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return accepted
            try:
                code = await asyncio.wait_for(leg.transfer_status.get(), remaining)
            except asyncio.TimeoutError:
                return accepted  # accepted (202) and no final NOTIFY: the PBX took the call
            if code == 202:
                accepted = True
            elif 200 <= code < 300:
                return True
            elif code >= 300:
                log.warning("call %s: transfer to %s refused: %d", leg.label, uri, code)
                return False

    def media_stats(self) -> list[dict[str, float]]:
        """Per-call media counters of the calls in progress."""
        return [leg.buffers.stats() for leg in self.legs.values() if leg.buffers is not None]
