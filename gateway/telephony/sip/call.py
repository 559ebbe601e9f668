"""One SIP call, in two halves that live on different threads.

- ``PjCall`` is the pjsua2 ``Call``: it lives on the endpoint's runtime thread and only forwards
  pjsua2 callbacks to the endpoint (see ``endpoint.py``).
- ``CallLeg`` is the event-loop half: the call's identity and its media leg
  (``gateway/telephony/media_leg.py``: the caller's frames held until the session has started,
  the flood limit, the 20 ms tick that tops up pjmedia's send queue, one end), whose wire it is:
  a clear empties the send queue, a transfer is a REFER, the end of the call a BYE. It holds no
  pjsua2 object, so the garbage collector can never free one from the loop's thread.

Small sans-IO helpers read what the gateway needs from SIP text (the user part of a URI, one
header of the INVITE).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Callable

import pjsua2 as pj

from gateway.core.actions import Transfer
from gateway.telephony.media_leg import CallTasks, LegEnd, MediaLeg
from gateway.telephony.media_pacer import MediaPacer
from gateway.telephony.sip.runtime import SipError, guarded
from gateway.voice.port import CallAudio, VoiceSessions

if TYPE_CHECKING:
    from gateway.telephony.sip.endpoint import SipEndpoint
    from gateway.telephony.sip.media import CallAudioPort, FrameBuffers
    from gateway.telephony.sip.rtp_watch import RtpClock

log = logging.getLogger(__name__)

STOP_WAIT_S = 10.0
"""How long the end of a call waits for its session to stop (the call is gone either way)."""

MAX_HEADER_SCAN = 8192
"""Only the start of an INVITE is searched for headers (the SDP body follows them)."""

_URI_USER = re.compile(r"sips?:([^@;>:]+)@")
_URI_ANY = re.compile(r"sips?:([^;>]+)")


def uri_user(uri: str) -> str:
    """The user part of a SIP URI or name-addr (``"Bob" <sip:2001@pbx>`` -> ``2001``)."""
    match = _URI_USER.search(uri)
    if match:
        return match.group(1)
    match = _URI_ANY.search(uri)
    return match.group(1) if match else ""


def uri_host(uri: str) -> str:
    """The host (and port) of a SIP URI (``sip:pbx.example.com:5060;transport=tcp`` ->
    ``pbx.example.com:5060``)."""
    rest = uri.strip().strip("<>")
    for scheme in ("sips:", "sip:"):
        if rest.startswith(scheme):
            rest = rest[len(scheme):]
            break
    rest = rest.split("@", 1)[-1]
    return rest.split(";", 1)[0].split("?", 1)[0].split(">", 1)[0]


def header_value(message: str, name: str) -> str:
    """The first ``name:`` header of a SIP message (case-insensitive), or ``""``."""
    head = message[:MAX_HEADER_SCAN].split("\r\n\r\n", 1)[0]
    wanted = name.lower()
    for line in head.splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == wanted:
            return value.strip()[:256]
    return ""


class CallLeg:
    """The loop-side state of one SIP call; its media leg's wire."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        sip_call_id: str = "",
        remote_uri: str = "",
        caller_id: str = "",
        dialed: str = "",
        outbound: bool = False,
        conversation_id: str = "",
        callback: str = "",
        attestation: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.key = -1  # pjsua call id, set on the runtime thread
        self.sip_call_id = sip_call_id
        self.remote_uri = remote_uri
        self.caller_id = caller_id
        self.dialed = dialed
        self.outbound = outbound
        self.conversation_id = conversation_id
        self.callback = callback  # the core's nonce for a call it placed (handed back on answer)
        self.attestation = attestation  # STIR/SHAKEN level a listed peer says it verified
        self.media: MediaLeg | None = None
        self.buffers: FrameBuffers | None = None
        self.confirmed = False
        self.answered: asyncio.Future[CallAudio] | None = None  # outbound: resolves with the started session
        self.transfer_status: asyncio.Queue[int] = asyncio.Queue(maxsize=16)
        self.closed = asyncio.Event()
        self.local_hangup = False
        self.end_code = 0
        self.end_reason = ""
        self.tasks = CallTasks()  # its session's start and stop, its hang-up

    @property
    def label(self) -> str:
        """How logs name the call."""
        return self.sip_call_id or f"pjsua-{self.key}"

    # ---- session lifecycle (event loop) ----------------------------------------------------------
    def start_session(self, pipeline: VoiceSessions, pacer: MediaPacer) -> None:
        """Create the call's session and its media leg; the caller's frames go to the leg."""
        buffers = self.buffers
        assert buffers is not None and self.media is None
        self.media = MediaLeg(self, kind="SIP", call_id=self.label, pacer=pacer, spawn=self.tasks.spawn)
        try:
            session = pipeline.session(
                call_id=self.sip_call_id, sample_rate=buffers.sample_rate, caller_id=self.caller_id,
                dialed=self.dialed, conversation_id=self.conversation_id, outbound=self.outbound,
                channel="voice", callback=self.callback, attestation=self.attestation,
            )
        except Exception as exc:  # noqa: BLE001 - this call fails alone
            log.error("call %s: no voice session: %s", self.label, exc)
            self.media.close("error")
            return
        buffers.consumer = self.media.caller_audio
        self.media.begin(session)

    def key_pressed(self, digit: str) -> None:
        if self.media is not None:
            self.media.caller_key(digit)

    async def end(self, code: int, reason: str) -> None:
        """The call is over (either side): stop the session, wait for it (idempotent)."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.end_code, self.end_reason = code, reason
        if self.buffers is not None:
            self.buffers.active = False
            self.buffers.consumer = None
            log.info("call %s media stats %s", self.label, self.buffers.stats())
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(SipError(f"call not answered: {code} {reason}"))
        if self.media is not None:
            self.media.close("completed" if self.local_hangup else "hangup")
            try:
                await asyncio.wait_for(self.media.stopped.wait(), STOP_WAIT_S)
            except asyncio.TimeoutError:
                log.warning("call %s: the session did not stop in time", self.label)

    async def hangup(self, reason: str) -> None:
        """End the call (BYE, or CANCEL/final response before answer)."""
        await self.endpoint.hangup(self, reason)

    # ---- the media leg's wire (gateway.telephony.media_leg.LegWire) -----------------------------
    def play(self, pull: Callable[[], bytes]) -> None:
        """Keep pjmedia's send queue topped up (more frames after underruns)."""
        if self.buffers is not None and self.buffers.active:
            self.buffers.top_up(pull)

    def clear(self) -> None:
        """The caller cut the bot short: what waits for pjmedia's clock is dropped."""
        if self.buffers is not None:
            self.buffers.outgoing.clear()

    def opened(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id or self.conversation_id
        media = self.media
        if self.answered is not None and not self.answered.done() and media is not None and media.session is not None:
            self.answered.set_result(media.session)

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        """Blind transfer (REFER) to the configured agent URI; True once the far end accepts."""
        return await self.endpoint.transfer(self, conversation_id or self.conversation_id, action)

    def hanging_up(self) -> float:
        """pjmedia plays what is queued (at most ``OUT_DEPTH_MAX`` frames) before the BYE."""
        return len(self.buffers.outgoing) * 0.02 if self.buffers is not None else 0.0

    def played_out(self) -> bool:
        return self.buffers is None or not self.buffers.outgoing

    def close(self, end: LegEnd) -> None:
        """The leg ended: hang up unless the call is already gone."""
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(SipError(f"voice session ended: {end.reason}"))
        if not self.closed.is_set():
            self.tasks.spawn(self.hangup(f"session {end.reason}"))


class PjCall(pj.Call):
    """The pjsua2 call object; every callback is forwarded to the endpoint's runtime side."""

    def __init__(self, endpoint: SipEndpoint, account: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.endpoint = endpoint
        self.leg: CallLeg | None = None
        self.port: CallAudioPort | None = None
        self.rtp: RtpClock | None = None  # from confirmation on: the RTP inactivity timeout's clock

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self.endpoint._pj_call_state(self)

    @guarded
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.endpoint._pj_media_state(self)

    @guarded
    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        # RFC 4733 digits arrive on the media thread, SIP INFO ones on the runtime thread.
        self.endpoint._pj_dtmf(self, prm.digit)

    @guarded
    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        self.endpoint._pj_transfer_status(self, prm.statusCode, prm.reason, prm.finalNotify)
        prm.cont = True
