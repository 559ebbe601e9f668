"""One SIP call, in two halves that live on different threads.

- ``PjCall`` is the pjsua2 ``Call``: it lives on the endpoint's runtime thread and only forwards
  pjsua2 callbacks to the endpoint (see ``endpoint.py``).
- ``CallLeg`` is the event-loop half: the call's identity, its ``VoiceSession`` and the
  ``CallControl`` the session uses to transfer or hang up. It holds no pjsua2 object, so the
  garbage collector can never free one from the loop's thread.

Small sans-IO helpers read what the gateway needs from SIP text (the user part of a URI, one
header of the INVITE).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from gateway.core.actions import Transfer
from gateway.telephony.sip.runtime import guarded

if TYPE_CHECKING:
    from gateway.telephony.sip.endpoint import SipEndpoint
    from gateway.telephony.sip.media import CallAudioPort, FrameBuffers

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
    """The loop-side state of one SIP call; it is the session's ``CallControl``."""

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
    ) -> None:
        self.endpoint = endpoint
        self.key = -1  # pjsua call id, set on the runtime thread
        self.sip_call_id = sip_call_id
        self.remote_uri = remote_uri
        self.caller_id = caller_id
        self.dialed = dialed
        self.outbound = outbound
        self.conversation_id = conversation_id
        self.session: Any = None
        self.buffers: FrameBuffers | None = None
        self.confirmed = False
        self.answered: asyncio.Future[Any] | None = None  # outbound: resolves with the session
        self.transfer_status: asyncio.Queue[int] = asyncio.Queue(maxsize=16)
        self.closed = asyncio.Event()
        self.local_hangup = False
        self.end_code = 0
        self.end_reason = ""
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def label(self) -> str:
        """How logs name the call."""
        return self.sip_call_id or f"pjsua-{self.key}"

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        """Blind transfer (REFER) to the configured agent URI; True once the far end accepts."""
        return await self.endpoint.transfer(self, conversation_id or self.conversation_id, action)

    async def hangup(self, reason: str) -> None:
        """End the call (BYE, or CANCEL/final response before answer)."""
        await self.endpoint.hangup(self, reason)


class PjCall(pj.Call):
    """The pjsua2 call object; every callback is forwarded to the endpoint's runtime side."""

    def __init__(self, endpoint: SipEndpoint, account: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.endpoint = endpoint
        self.leg: CallLeg | None = None
        self.port: CallAudioPort | None = None

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
