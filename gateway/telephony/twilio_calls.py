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


def transfer_target(cfg: TwilioMediaSettings, action: Transfer) -> str:
    """Where a transfer to ``action.queue`` is dialed after the stream (``""``: nowhere configured)."""
    numbers = cfg.transfer_numbers
    return numbers.get(action.queue) or numbers.get("*", "")


def after_stream_twiml(target: str) -> str:
    """TwiML after the stream: dial ``target`` (a number, or a ``sip:`` URI), or hang up."""
    if target:
        noun = f"<Sip>{escape(target)}</Sip>" if target.startswith("sip:") else f"<Number>{escape(target)}</Number>"
        body = f"<Response><Dial>{noun}</Dial></Response>"
    else:
        body = "<Response><Hangup/></Response>"
    return '<?xml version="1.0" encoding="UTF-8"?>' + body
