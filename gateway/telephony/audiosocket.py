"""AudioSocket wire protocol (Asterisk ``res_audiosocket``), sans-IO.

A message is ``kind (1 byte) + payload length (2 bytes, big-endian) + payload``
(``include/asterisk/res_audiosocket.h`` in Asterisk 22). What a real Asterisk 22.10.1 does,
as recorded in the shared fixtures:

* it sends ``0x01`` (UUID, 16 *binary* bytes) first and exactly once, then audio;
* ``0x03`` (DTMF, one ASCII byte) once per digit at key-up; audio pauses while the key is down;
* audio is ``0x10`` (slin 8 kHz, what the ``AudioSocket()`` application always uses) or, from
  the channel driver with ``c(slinNN)``, ``0x11``..``0x18`` (12 kHz .. 192 kHz); little-endian;
* the last audio frame of a prompt may be short (24 or 44 bytes); a zero-length audio frame is
  an error for Asterisk;
* it never sends ``0x00`` (hangup) or ``0xff`` (error): a call ends with a TCP close;
* from the gateway it accepts only audio kinds and ``0x00``; anything else (``0xff``, ``0x03``,
  ``0x01``) makes it hang up the call with a TCP RST.

:class:`AudioSocketParser` turns bytes into typed messages and moves into an ERROR state on
the first protocol violation; the ``encode_*`` functions build messages.
"""

from __future__ import annotations

import enum
import struct
import uuid as uuidlib
from dataclasses import dataclass
from typing import Union

HEADER_BYTES = 3
"""kind (1) + big-endian payload length (2)."""

MAX_PAYLOAD_LIMIT = 65535
"""The length field is 16 bits; no configuration may allow more."""

DEFAULT_MAX_PAYLOAD_BYTES = 4096
"""20 ms at 48 kHz is 1920 bytes; 4096 leaves room for 40 ms at 48 kHz. 96/192 kHz callers
need a larger ``audiosocket.max_payload_bytes``."""

DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


class Kind(enum.IntEnum):
    """AudioSocket message kinds of Asterisk 22 (``enum ast_audiosocket_msg_kind``)."""

    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    SLIN = 0x10
    SLIN12 = 0x11
    SLIN16 = 0x12
    SLIN24 = 0x13
    SLIN32 = 0x14
    SLIN44 = 0x15
    SLIN48 = 0x16
    SLIN96 = 0x17
    SLIN192 = 0x18
    ERROR = 0xFF


AUDIO_KIND_RATES: dict[int, int] = {
    Kind.SLIN: 8000,
    Kind.SLIN12: 12000,
    Kind.SLIN16: 16000,
    Kind.SLIN24: 24000,
    Kind.SLIN32: 32000,
    Kind.SLIN44: 44100,
    Kind.SLIN48: 48000,
    Kind.SLIN96: 96000,
    Kind.SLIN192: 192000,
}
RATE_AUDIO_KINDS: dict[int, int] = {rate: kind for kind, rate in AUDIO_KIND_RATES.items()}


class ProtocolError(Exception):
    """The peer broke the AudioSocket protocol; the connection cannot continue."""


@dataclass(frozen=True)
class Hangup:
    """Kind 0x00: the sender ends the session."""


@dataclass(frozen=True)
class Uuid:
    """Kind 0x01: the call's UUID (the first argument of ``AudioSocket()``)."""

    uuid: uuidlib.UUID


@dataclass(frozen=True)
class Dtmf:
    """Kind 0x03: one DTMF digit, sent by Asterisk at key-up."""

    digit: str


@dataclass(frozen=True)
class Audio:
    """Kinds 0x10..0x18: signed 16-bit little-endian mono PCM at ``sample_rate``."""

    pcm: bytes
    sample_rate: int


@dataclass(frozen=True)
class ErrorMessage:
    """Kind 0xff: an error code (Asterisk 22.10.1 never sends it)."""

    payload: bytes


Message = Union[Hangup, Uuid, Dtmf, Audio, ErrorMessage]


class State(enum.Enum):
    OPEN = "open"
    ERROR = "error"
    CLOSED = "closed"


class AudioSocketParser:
    """Incremental parser: ``receive_data(bytes) -> list[Message]``.

    ``max_payload_bytes`` bounds every payload (the header is checked before the payload is
    buffered, so an oversize length is refused at once). ``require_uuid_first`` enforces what
    Asterisk always does: the UUID message comes first and only once. After a violation the
    parser is in ``State.ERROR`` and refuses any further data.
    """

    def __init__(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, *, require_uuid_first: bool = True):
        if not 0 < max_payload_bytes <= MAX_PAYLOAD_LIMIT:
            raise ValueError(f"max_payload_bytes must be 1..{MAX_PAYLOAD_LIMIT}, got {max_payload_bytes}")
        self.max_payload_bytes = max_payload_bytes
        self.require_uuid_first = require_uuid_first
        self.state = State.OPEN
        self.uuid: uuidlib.UUID | None = None
        self.bytes_received = 0
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> list[Message]:
        """Feed bytes as they arrive (any split); returns the messages they completed."""
        if self.state is State.ERROR:
            raise ProtocolError("connection already failed; no further data is parsed")
        if self.state is State.CLOSED:
            raise ProtocolError("data after the end of the stream")
        self.bytes_received += len(data)
        self._buffer += data
        out: list[Message] = []
        while len(self._buffer) >= HEADER_BYTES:
            kind, length = struct.unpack_from(">BH", self._buffer)
            self._check_header(kind, length)
            if len(self._buffer) < HEADER_BYTES + length:
                break
            payload = bytes(self._buffer[HEADER_BYTES:HEADER_BYTES + length])
            del self._buffer[:HEADER_BYTES + length]
            out.append(self._message(kind, payload))
        return out

    def receive_eof(self) -> None:
        """The peer closed its side. Raises ProtocolError on a truncated message."""
        if self.state is State.ERROR:
            return
        pending = len(self._buffer)
        self.state = State.CLOSED
        if pending:
            detail = ""
            if pending >= HEADER_BYTES:
                kind, length = struct.unpack_from(">BH", self._buffer)
                detail = f" (kind 0x{kind:02x} announced {length} payload bytes)"
            self.state = State.ERROR
            raise ProtocolError(f"truncated message at end of stream: {pending} bytes buffered{detail}")

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message held so far (bounded by max_payload_bytes + 3)."""
        return len(self._buffer)

    def _fail(self, message: str) -> ProtocolError:
        self.state = State.ERROR
        self._buffer.clear()
        return ProtocolError(message)

    def _check_header(self, kind: int, length: int) -> None:
        if kind not in Kind._value2member_map_:
            raise self._fail(f"unknown message kind 0x{kind:02x} (length {length})")
        if self.require_uuid_first:
            if self.uuid is None and kind != Kind.UUID:
                raise self._fail(f"first message must be the UUID (kind 0x01), got kind 0x{kind:02x}")
            if self.uuid is not None and kind == Kind.UUID:
                raise self._fail("second UUID message on one connection")
        if length > self.max_payload_bytes:
            raise self._fail(f"payload of {length} bytes for kind 0x{kind:02x} exceeds the limit of "
                             f"{self.max_payload_bytes} bytes")
        if kind == Kind.UUID and length != 16:
            raise self._fail(f"UUID message must carry 16 bytes, got {length}")
        if kind == Kind.DTMF and length != 1:
            raise self._fail(f"DTMF message must carry 1 byte, got {length}")
        if kind in AUDIO_KIND_RATES and length == 0:
            raise self._fail(f"zero-length audio message (kind 0x{kind:02x})")

    def _message(self, kind: int, payload: bytes) -> Message:
        if kind in AUDIO_KIND_RATES:
            if len(payload) % 2:
                raise self._fail(f"odd audio payload of {len(payload)} bytes (16-bit samples expected)")
            return Audio(payload, AUDIO_KIND_RATES[kind])
        if kind == Kind.UUID:
            self.uuid = uuidlib.UUID(bytes=payload)
            return Uuid(self.uuid)
        if kind == Kind.DTMF:
            digit = chr(payload[0])
            if digit not in DTMF_DIGITS:
                raise self._fail(f"DTMF message with invalid digit byte 0x{payload[0]:02x}")
            return Dtmf(digit.upper())
        if kind == Kind.HANGUP:
            return Hangup()
        return ErrorMessage(payload)


def _frame(kind: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD_LIMIT:
        raise ValueError(f"payload of {len(payload)} bytes does not fit an AudioSocket message")
    return struct.pack(">BH", kind, len(payload)) + payload


def encode_audio(pcm: bytes, sample_rate: int = 8000) -> bytes:
    """An audio message of the kind matching ``sample_rate`` (0x10 for 8 kHz, 0x12 for 16 kHz...)."""
    if sample_rate not in RATE_AUDIO_KINDS:
        raise ValueError(f"AudioSocket has no audio kind for {sample_rate} Hz")
    if not pcm or len(pcm) % 2:
        raise ValueError("audio payload must be a non-empty whole number of 16-bit samples")
    return _frame(RATE_AUDIO_KINDS[sample_rate], pcm)


def encode_hangup() -> bytes:
    """``00 00 00``: Asterisk's AudioSocket() then returns normally and the dialplan goes on."""
    return _frame(Kind.HANGUP, b"")


def encode_uuid(call_uuid: uuidlib.UUID | str) -> bytes:
    """The UUID message Asterisk sends first (used by test peers and benches)."""
    value = call_uuid if isinstance(call_uuid, uuidlib.UUID) else uuidlib.UUID(call_uuid)
    return _frame(Kind.UUID, value.bytes)


def encode_dtmf(digit: str) -> bytes:
    """A DTMF message as Asterisk sends it (never send it to Asterisk: it hangs up)."""
    if len(digit) != 1 or digit not in DTMF_DIGITS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return _frame(Kind.DTMF, digit.encode("ascii"))


def encode_error(code: bytes = b"\x01") -> bytes:
    """An error message (never send it to Asterisk: it hangs up with a TCP RST)."""
    return _frame(Kind.ERROR, code)


def audio_kind(sample_rate: int) -> int:
    """The message kind for ``sample_rate``; ValueError if AudioSocket has none."""
    try:
        return RATE_AUDIO_KINDS[sample_rate]
    except KeyError:
        raise ValueError(f"AudioSocket has no audio kind for {sample_rate} Hz") from None
