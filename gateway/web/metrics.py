"""Moved to :mod:`gateway.metrics` (channels do not import the web package).

Kept only for the two Twilio connector modules that still import it from here
(``gateway/telephony/twilio_media_server.py``, ``twilio_signing.py``); they switch to
``gateway.metrics`` with the voice-port work, and this file goes.
"""

from gateway.metrics import HELP, Metrics

__all__ = ["HELP", "Metrics"]
