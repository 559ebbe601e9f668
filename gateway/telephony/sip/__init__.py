"""The gateway's own SIP user agent (pjsua2): registers as an extension or serves as a trunk,
answers and places calls bridged to voice sessions, DTMF, blind transfer by REFER.

``start_sip_channel(settings, core, pipeline)`` is what ``voicegw serve`` starts when
``sip.enabled``; ``voicegw call`` is a small softphone built on the same runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.telephony.sip.channel import SipChannel
    from gateway.voice.port import VoiceSessions

__all__ = ["start_sip_channel"]


async def start_sip_channel(settings: Any, core: Any, pipeline: "VoiceSessions") -> "SipChannel":
    """Start the SIP channel (see ``gateway.telephony.sip.channel.start_sip_channel``)."""
    from gateway.telephony.sip.channel import start_sip_channel as start

    return await start(settings, core, pipeline)
