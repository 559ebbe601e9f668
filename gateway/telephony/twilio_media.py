"""Twilio Media Streams wire format: JSON text messages in, typed messages out (sans-IO).

A bidirectional stream (TwiML ``<Connect><Stream url="wss://.../media/twilio"/>``) carries one
JSON object per WebSocket text message. From Twilio, as documented in "Media Streams -
WebSocket Messages":

    {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    {"event": "start", "sequenceNumber": "1", "streamSid": "MZ...",
     "start": {"accountSid": "AC...", "streamSid": "MZ...", "callSid": "CA...",
               "tracks": ["inbound"], "customParameters": {"from": "+1555..."},
               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    {"event": "media", "sequenceNumber": "3", "streamSid": "MZ...",
     "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": "<base64 mu-law>"}}
    {"event": "dtmf", "sequenceNumber": "5", "streamSid": "MZ...",
     "dtmf": {"track": "inbound_track", "digit": "1"}}
    {"event": "mark", "sequenceNumber": "4", "streamSid": "MZ...", "mark": {"name": "..."}}
    {"event": "stop", "sequenceNumber": "5", "streamSid": "MZ...",
     "stop": {"accountSid": "AC...", "callSid": "CA..."}}

To Twilio: ``media`` (``{"event": "media", "streamSid": ..., "media": {"payload": ...}}``),
``mark`` (Twilio echoes the name back once the audio sent before it has played) and ``clear``
(drops the audio Twilio has buffered, for barge-in).

:class:`TwilioMediaParser` checks each message against these shapes and raises one
:class:`ProtocolError` on anything else; the parser then stays in an error state. It only
parses ``customParameters``; which of them the gateway believes (those it signed itself) is
:mod:`gateway.telephony.twilio_signing`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Union

MAX_MESSAGE_BYTES = 64 * 1024
"""Largest text message accepted. A 20 ms media message is about 300 bytes; a start message
with many custom parameters a few kB. Twilio's own limit on custom parameters is far below this."""
MAX_PAYLOAD_BYTES = 16 * 1024
"""Largest decoded media payload (2 s of 8 kHz mu-law; Twilio sends 20 ms chunks)."""
ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000
FRAME_BYTES = 160
"""20 ms of 8 kHz mu-law: what the gateway sends per media message."""
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class ProtocolError(ValueError):
    """The peer sent something that is not a Media Streams message."""


@dataclass(frozen=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = ENCODING
    sample_rate: int = SAMPLE_RATE
    channels: int = 1


@dataclass(frozen=True)
class Media:
    stream_sid: str
    track: str
    chunk: int
    timestamp: int
    payload: bytes
    """Decoded mu-law bytes."""


@dataclass(frozen=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True)
class Stop:
    stream_sid: str
    call_sid: str


Message = Union[Connected, Start, Media, Dtmf, Mark, Stop]


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be an object")
    return value


def _str(obj: dict[str, Any], key: str, what: str, *, required: bool = True, limit: int = 256) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{what}.{key} must be a string")
    if len(value) > limit:
        raise ProtocolError(f"{what}.{key} is longer than {limit} characters")
    return value


def _int(obj: dict[str, Any], key: str, what: str) -> int:
    """Twilio sends chunk and timestamp as decimal strings; numbers are accepted too."""
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ProtocolError(f"{what}.{key} must be a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 15:
        return int(value)
    raise ProtocolError(f"{what}.{key} must be a decimal number")


class TwilioMediaParser:
    """One stream's inbound messages: ``receive_text(str) -> Message``; errors are final."""

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.max_message_bytes = max_message_bytes
        self.stream_sid = ""
        self.started = False
        self.error: str = ""

    def receive_text(self, text: str) -> Message:
        """Parse one WebSocket text message."""
        if self.error:
            raise ProtocolError(f"stream already failed: {self.error}")
        try:
            return self._parse(text)
        except ProtocolError as exc:
            self.error = str(exc)
            raise

    def _parse(self, text: str) -> Message:
        if len(text) > self.max_message_bytes:
            raise ProtocolError(f"message of {len(text)} characters (limit {self.max_message_bytes})")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"not JSON: {exc}") from None
        data = _obj(data, "message")
        event = data.get("event")
        if event == "connected":
            return Connected(_str(data, "protocol", "connected", required=False),
                             _str(data, "version", "connected", required=False))
        if event == "start":
            return self._start(data)
        if event not in ("media", "dtmf", "mark", "stop"):
            raise ProtocolError(f"unknown event {str(event)[:40]!r}")
        if not self.started:
            raise ProtocolError(f"{event!r} before start")
        sid = _str(data, "streamSid", str(event), required=False)
        if sid and sid != self.stream_sid:
            raise ProtocolError(f"{event} for stream {sid!r} on stream {self.stream_sid!r}")
        if event == "media":
            media = _obj(data.get("media"), "media")
            raw = _str(media, "payload", "media", limit=MAX_PAYLOAD_BYTES * 4 // 3 + 4)
            try:
                payload = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError("media.payload is not base64") from None
            return Media(self.stream_sid, _str(media, "track", "media", required=False) or "inbound",
                         _int(media, "chunk", "media"), _int(media, "timestamp", "media"), payload)
        if event == "dtmf":
            digit = _str(_obj(data.get("dtmf"), "dtmf"), "digit", "dtmf", limit=1)
            if digit.upper() not in DTMF_DIGITS:
                raise ProtocolError(f"dtmf.digit {digit!r} is not a key")
            return Dtmf(self.stream_sid, digit.upper())
        if event == "mark":
            return Mark(self.stream_sid, _str(_obj(data.get("mark"), "mark"), "name", "mark"))
        if event == "stop":
            stop = data.get("stop")
            call_sid = _str(stop, "callSid", "stop", required=False) if isinstance(stop, dict) else ""
            return Stop(self.stream_sid, call_sid)
        raise AssertionError(event)  # unreachable: the event was checked above

    def _start(self, data: dict[str, Any]) -> Start:
        if self.started:
            raise ProtocolError("second start on one stream")
        start = _obj(data.get("start"), "start")
        sid = _str(start, "streamSid", "start", required=False) or _str(data, "streamSid", "start", required=False)
        if not sid:
            raise ProtocolError("start without streamSid")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks) or len(tracks) > 4:
            raise ProtocolError("start.tracks must be a list of strings")
        params_in = start.get("customParameters") or {}
        params_in = _obj(params_in, "start.customParameters")
        if len(params_in) > 64:
            raise ProtocolError("start.customParameters has more than 64 entries")
        params: dict[str, str] = {}
        for key, value in params_in.items():
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ProtocolError(f"start.customParameters.{str(key)[:40]} must be a string")
            params[str(key)[:64]] = str(value)[:512]
        fmt = _obj(start.get("mediaFormat") or {"encoding": ENCODING, "sampleRate": SAMPLE_RATE}, "start.mediaFormat")
        encoding = _str(fmt, "encoding", "start.mediaFormat", required=False) or ENCODING
        rate = fmt.get("sampleRate", SAMPLE_RATE)
        channels = fmt.get("channels", 1)
        if encoding != ENCODING or rate != SAMPLE_RATE or channels != 1:
            raise ProtocolError(f"unsupported media format {encoding} {rate} Hz x{channels} "
                                f"(Media Streams send {ENCODING} 8000 Hz mono)")
        self.stream_sid = sid
        self.started = True
        return Start(sid, _str(start, "callSid", "start", required=False),
                     _str(start, "accountSid", "start", required=False), tuple(tracks), params,
                     encoding, rate, channels)


# --- what the gateway sends -----------------------------------------------------------------
def encode_media(stream_sid: str, ulaw: bytes) -> str:
    """A ``media`` message carrying mu-law audio for the caller."""
    return json.dumps({"event": "media", "streamSid": stream_sid,
                       "media": {"payload": base64.b64encode(ulaw).decode("ascii")}})


def encode_mark(stream_sid: str, name: str) -> str:
    """A ``mark``: Twilio answers with the same name once the audio before it has played."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def encode_clear(stream_sid: str) -> str:
    """A ``clear``: Twilio drops the audio it has buffered (barge-in)."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})
