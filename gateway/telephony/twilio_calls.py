"""What a Twilio Media Stream needs besides its audio: settings, transfers, the after-stream TwiML.

(The TwiML before the stream, whose parameters the gateway signs, and who may open a stream at
all: :mod:`gateway.telephony.twilio_signing`.)

A stream cannot move the call itself: the gateway records where a transferred caller goes
(by CallSid), ends the stream, and Twilio asks the ``<Connect action>`` URL what to do next;
:func:`after_stream_twiml` answers ``<Dial>`` to the recorded number or SIP URI, else
``<Hangup/>``.
"""

from __future__ import annotations

import logging
from typing import Any
from xml.sax.saxutils import escape

from gateway.core.actions import Transfer
from gateway.config import TwilioMediaSettings  # the twilio_media section of the settings tree

log = logging.getLogger(__name__)

PATH = "/media/twilio"
MAX_REMEMBERED_TRANSFERS = 10_000


class TransferBook:
    """CallSid -> where the caller goes after the stream; bounded, each entry read once."""

    def __init__(self, max_calls: int = MAX_REMEMBERED_TRANSFERS):
        self.max_calls = max_calls
        self._targets: dict[str, str] = {}

    def remember(self, call_sid: str, target: str) -> None:
        self._targets[call_sid] = target
        while len(self._targets) > self.max_calls:
            del self._targets[next(iter(self._targets))]

    def pop(self, call_sid: str) -> str:
        return self._targets.pop(call_sid, "")


class TwilioCallControl:
    """Call control for a stream: transfers are carried out by ``<Connect action>`` after it."""

    def __init__(self, cfg: TwilioMediaSettings, transfers: TransferBook, stream: Any):
        self.cfg = cfg
        self.transfers = transfers
        self.stream = stream

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        numbers = self.cfg.transfer_numbers
        target = numbers.get(action.queue) or numbers.get("*", "")
        if not target:
            log.warning("Twilio call %s: no transfer number for queue %r (twilio_media.transfer_numbers)",
                        self.stream.call_id, action.queue)
            return False
        self.transfers.remember(self.stream.call_sid or self.stream.call_id, target)
        return True

    async def hangup(self, reason: str) -> None:
        self.stream.hangup_requested = True


def after_stream_twiml(target: str) -> str:
    """TwiML after the stream: dial ``target`` (a number, or a ``sip:`` URI), or hang up."""
    if target:
        noun = f"<Sip>{escape(target)}</Sip>" if target.startswith("sip:") else f"<Number>{escape(target)}</Number>"
        body = f"<Response><Dial>{noun}</Dial></Response>"
    else:
        body = "<Response><Hangup/></Response>"
    return '<?xml version="1.0" encoding="UTF-8"?>' + body
