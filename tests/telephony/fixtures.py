"""Loader and replayer for the Asterisk 22.10.1 wire captures in ``shared/fixtures/asterisk``.

Each ``*.jsonl`` line is one ``recv()`` or ``send()`` of the recording peer (``b64`` holds the
exact bytes), or an ``event`` such as ``eof``. The fixtures live beside the repository
(``<repo>/../shared/fixtures/asterisk``); ``ASTERISK_FIXTURES_DIR`` overrides the location.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "asterisk"


def fixtures_dir() -> Path:
    """Where the Asterisk captures are (``ASTERISK_FIXTURES_DIR`` wins)."""
    env = os.environ.get("ASTERISK_FIXTURES_DIR")
    if env:
        path = Path(env)
        return path / "asterisk" if (path / "asterisk").is_dir() else path
    return DEFAULT_DIR


@dataclass(frozen=True)
class Chunk:
    """One read or write of the recording peer."""

    t_ms: float
    direction: str  # "from_asterisk" or "to_asterisk"
    data: bytes
    event: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def from_asterisk(self) -> bool:
        return self.direction == "from_asterisk"


CAPTURES_DIR = Path(__file__).resolve().parent / "captures"
"""Captures recorded for this repository (missing queues, keys during STREAM FILE, QueueStatus,
the shipped dialplan's failure paths): see ``captures/README.md``."""


def load(name: str) -> list[Chunk]:
    """Chunks of ``<folder>/<name>.jsonl`` (``name`` like ``audiosocket/as_a_app_hello_world``);
    ``captures/<name>`` reads this repository's own captures.

    Skips the calling test when the shared fixtures are not present.
    """
    if name.startswith("captures/"):
        path = CAPTURES_DIR / f"{name.removeprefix('captures/')}.jsonl"
    else:
        path = fixtures_dir() / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"Asterisk fixture not found: {path} (set ASTERISK_FIXTURES_DIR)")
    chunks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        chunks.append(Chunk(
            t_ms=float(item["t_ms"]),
            direction=item["dir"],
            data=base64.b64decode(item.get("b64", "")),
            event=item.get("event", ""),
            meta={k: v for k, v in item.items() if k not in ("t_ms", "dir", "b64", "event")},
        ))
    return chunks


def raw_path(name: str) -> Path:
    """Path of a non-JSONL fixture file (``captures/...``: this repository's); skips the test when missing."""
    path = CAPTURES_DIR / name.removeprefix("captures/") if name.startswith("captures/") else fixtures_dir() / name
    if not path.exists():
        pytest.skip(f"Asterisk fixture not found: {path} (set ASTERISK_FIXTURES_DIR)")
    return path


def replies(chunks: list[Chunk], command: str) -> list[str]:
    """What Asterisk answered each ``command`` of a recorded FastAGI session, in order (the
    final result line, ``100 Trying`` and ``HANGUP`` lines skipped)."""
    sent = stream(chunks, "to_asterisk").decode().splitlines()
    got = [line for line in stream(chunks).decode().split("\n\n", 1)[-1].splitlines()
           if line and line != "HANGUP" and not line.startswith("100 ")]
    return [answer for line, answer in zip(sent, got) if line.startswith(command)]


def stream(chunks: list[Chunk], direction: str = "from_asterisk") -> bytes:
    """All bytes sent in one direction, concatenated."""
    return b"".join(c.data for c in chunks if c.direction == direction)


def annotated_messages(chunks: list[Chunk]) -> list[dict[str, Any]]:
    """The recorder's own ``msgs`` annotations (AudioSocket), in order."""
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        out.extend(chunk.meta.get("msgs", []))
    return out


async def replay_to_server(
    host: str,
    port: int,
    chunks: list[Chunk],
    *,
    speed: float = 0.0,
    split: int | None = None,
    close: bool = True,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Play Asterisk's side of a server-side capture against a server under test.

    Sends every ``from_asterisk`` chunk as recorded (``split``: re-cut into pieces of that
    size; ``speed`` > 0 keeps the recorded timing scaled by ``1/speed``). Returns the open
    stream pair (half-closed when ``close`` and the capture ends with an EOF).
    """
    reader, writer = await asyncio.open_connection(host, port)
    start = asyncio.get_running_loop().time()
    for chunk in chunks:
        if not chunk.from_asterisk:
            continue
        if speed > 0:
            due = start + chunk.t_ms / 1000.0 / speed
            delay = due - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
        if chunk.event.startswith("eof") and close:
            writer.write_eof()
            continue
        if not chunk.data:
            continue
        if split:
            for i in range(0, len(chunk.data), split):
                writer.write(chunk.data[i:i + split])
                await writer.drain()
        else:
            writer.write(chunk.data)
            await writer.drain()
    return reader, writer


async def replay_as_asterisk(host: str, port: int, chunks: list[Chunk], timeout: float = 10.0) -> list[bytes]:
    """Play Asterisk against a FastAGI server in lockstep and return what the server sent.

    Sends each ``from_asterisk`` chunk in order; at each ``to_asterisk`` chunk, reads exactly the
    recorded number of bytes and asserts they are the recorded bytes; at the recorder's
    half-close (an empty ``to_asterisk`` chunk) expects EOF from the server.
    """
    reader, writer = await asyncio.open_connection(host, port)
    got: list[bytes] = []
    try:
        for chunk in chunks:
            if chunk.from_asterisk:
                if chunk.data:
                    writer.write(chunk.data)
                    await writer.drain()
                elif chunk.event.startswith("eof"):
                    writer.write_eof()
                continue
            if chunk.data:
                data = await asyncio.wait_for(reader.readexactly(len(chunk.data)), timeout)
                got.append(data)
                assert data == chunk.data, f"at {chunk.t_ms} ms the gateway sent {data!r}, Asterisk got {chunk.data!r}"
            else:
                rest = await asyncio.wait_for(reader.read(65536), timeout)
                assert rest == b"", f"expected the gateway to close its side, got {rest!r}"
    finally:
        writer.close()
    return got


# --- message sequences written from the providers' protocol documents ---------------------------

WRITTEN_DIR = Path(__file__).resolve().parent / "protocol_docs"
"""Twilio Media Streams and FreeSWITCH (outbound event socket, mod_audio_stream) sessions written
from the providers' published documents, not recorded: see ``protocol_docs/README.md``."""


@dataclass(frozen=True)
class Written:
    """One message of a written session (``protocol_docs/README.md`` describes every field)."""

    t_ms: float
    direction: str  # "from_peer" (the provider sends it) or "to_peer" (the gateway must send it)
    channel: str  # "ws" (Twilio), "http" (Twilio's callbacks), "esl" or "audio" (FreeSWITCH)
    text: str = ""
    data: bytes = b""
    match: str = "exact"  # to_peer: "exact", "prefix", "event" (same JSON event), "binary" (any frame), "contains"
    reply_to: str = ""  # from_peer: sent in answer to the gateway's command that starts with this
    after_gateway: str = ""  # from_peer: held until the gateway has sent this (then the schedule shifts)
    echo: str = ""  # from_peer: sent back each time the gateway sends a message of this event
    audio: str = ""  # "caller": the test's own caller audio goes in this media message
    meta: dict[str, Any] = field(default_factory=dict)


def load_written(name: str) -> list[Written]:
    """Messages of ``protocol_docs/<name>.jsonl``, a ``repeat`` line expanded into its messages
    (``{n}`` the message's index from 0, ``{seq}`` the sequence number ``seq0 + n``, ``{chunk}``
    ``chunk0 + n``, ``{ts}`` ``ts0 + 20 n``; ``t_ms`` 20 ms apart)."""
    path = WRITTEN_DIR / f"{name}.jsonl"
    out: list[Written] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("//"):
            continue
        item = json.loads(line)
        known = {"t_ms", "dir", "channel", "text", "b64", "match", "reply_to", "after_gateway", "echo", "audio",
                 "repeat", "seq0", "chunk0", "ts0"}
        meta = {k: v for k, v in item.items() if k not in known}
        for n in range(int(item.get("repeat", 1))):
            subst = {"n": n, "seq": int(item.get("seq0", 0)) + n, "chunk": int(item.get("chunk0", 0)) + n,
                     "ts": int(item.get("ts0", 0)) + 20 * n}
            text = item.get("text", "")
            if "repeat" in item:
                for key, value in subst.items():
                    text = text.replace("{" + key + "}", str(value))
            out.append(Written(
                t_ms=float(item.get("t_ms", 0.0)) + 20.0 * n, direction=item["dir"], channel=item.get("channel", ""),
                text=text, data=base64.b64decode(item.get("b64", "")), match=item.get("match", "exact"),
                reply_to=item.get("reply_to", ""), after_gateway=item.get("after_gateway", ""),
                echo=item.get("echo", ""), audio=item.get("audio", ""), meta=meta))
    return out
