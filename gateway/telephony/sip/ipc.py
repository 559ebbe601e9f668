"""The link between the gateway process and a SIP worker process: framed messages on a socket.

Each message is ``length (u32) | kind (u8) | payload``. Control messages are JSON objects
(``KIND_JSON``); audio travels as ``call (u32) | 16-bit PCM`` so 50 frames a second per call cost
no encoding. A ``Link`` coalesces what is sent during one turn of the event loop into one write.
Reads are bounded (``MAX_MESSAGE``); a peer that sends more, or garbage, ends the link.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any

log = logging.getLogger(__name__)

KIND_JSON = 0
KIND_AUDIO_IN = 1
"""Worker -> gateway: caller audio of one call."""
KIND_AUDIO_OUT = 2
"""Gateway -> worker: bot audio of one call."""
KIND_PULL = 3
"""Worker -> gateway: ``call (u32) | frames (u16)``, frames of bot audio the worker consumed."""

MAX_MESSAGE = 1 << 16
"""Largest message either side accepts (a 20 ms G.722 frame is 640 bytes)."""
MAX_BUFFERED = 4 << 20
"""Bytes waiting to be written beyond which audio is dropped (a stalled peer cannot make this
side grow memory without bound); control messages are still queued."""
_HEAD = struct.Struct("!IB")
_CALL = struct.Struct("!I")
_PULL = struct.Struct("!IH")


class LinkError(RuntimeError):
    """The other side sent something that is not a link message."""


def encode(kind: int, payload: bytes) -> bytes:
    """One framed message."""
    if len(payload) + 1 > MAX_MESSAGE:
        raise LinkError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE}")
    return _HEAD.pack(len(payload) + 1, kind) + payload


async def read_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next message; ``asyncio.IncompleteReadError`` at the end of the stream."""
    head = await reader.readexactly(_HEAD.size)
    size, kind = _HEAD.unpack(head)
    if not 1 <= size <= MAX_MESSAGE:
        raise LinkError(f"bad message length {size}")
    return kind, await reader.readexactly(size - 1)


def audio_payload(call: int, pcm: bytes) -> bytes:
    return _CALL.pack(call) + pcm


def split_audio(payload: bytes) -> tuple[int, bytes]:
    if len(payload) < _CALL.size:
        raise LinkError("short audio message")
    return _CALL.unpack_from(payload)[0], payload[_CALL.size:]


def pull_payload(call: int, frames: int) -> bytes:
    return _PULL.pack(call, frames)


def split_pull(payload: bytes) -> tuple[int, int]:
    if len(payload) != _PULL.size:
        raise LinkError("bad pull message")
    return _PULL.unpack(payload)


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(payload)
    except ValueError as exc:
        raise LinkError(f"bad JSON message: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise LinkError("a JSON message must be an object with a type 't'")
    return msg


class Link:
    """One end of the link: buffered sends (flushed once per loop turn) over a stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._out = bytearray()
        self._scheduled = False
        self.closed = False
        self.dropped = 0

    def send(self, kind: int, payload: bytes) -> None:
        if self.closed:
            return
        if kind != KIND_JSON and self.writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            self.dropped += 1
            if self.dropped in (1, 1000) or self.dropped % 50000 == 0:
                log.warning("SIP worker link: the other side is not reading; %d audio messages dropped",
                            self.dropped)
            return
        self._out += encode(kind, payload)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def send_json(self, **msg: Any) -> None:
        self.send(KIND_JSON, json.dumps(msg, separators=(",", ":")).encode())

    def _flush(self) -> None:
        self._scheduled = False
        if self._out and not self.closed:
            try:
                self.writer.write(bytes(self._out))
            except (ConnectionError, RuntimeError) as exc:
                log.warning("SIP worker link: write failed: %s", exc)
                self.closed = True
        self._out.clear()

    async def read(self) -> tuple[int, bytes]:
        return await read_message(self.reader)

    async def drain(self) -> None:
        self._flush()
        try:
            await self.writer.drain()
        except ConnectionError:
            self.closed = True

    def close(self) -> None:
        if not self.closed:
            self._flush()
        self.closed = True
        try:
            self.writer.close()
        except RuntimeError:
            pass
