"""Twilio and FreeSWITCH played from sessions written from their documents (``protocol_docs/``).

``play_twilio`` is Twilio's side of one Media Stream (and the action request after it);
``WrittenFreeSwitch`` is FreeSWITCH's side of one outbound event socket call and its
mod_audio_stream WebSocket. Both send the ``from_peer`` messages on their schedule, answer the
gateway as the documents say (ESL replies, mark echoes), record everything the gateway sent, and
``check_expected`` asserts the ``to_peer`` lines against it, in order.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import aiohttp

from tests.telephony.fixtures import Written

GATEWAY_WAIT_SECONDS = 60.0
"""Longest wait for what an ``after_gateway`` line waits for (a first greeting on a loaded machine)."""


@dataclass
class Heard:
    """What the gateway sent, in order: (event, payload) with event ``media``/``clear``/``mark``
    (Twilio JSON), ``binary`` (an audio frame), ``esl`` (a command block), ``close`` (its code),
    ``http`` (a response body)."""

    items: list[tuple[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: str, payload: Any) -> None:
        self.items.append((event, payload))
        self.changed.set()

    def count(self, event: str) -> int:
        return sum(1 for e, _ in self.items if e == event)

    async def wait_for(self, event: str, timeout: float = GATEWAY_WAIT_SECONDS) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.count(event):
            self.changed.clear()
            remaining = end - loop.time()
            assert remaining > 0, f"the gateway never sent {event}: {[e for e, _ in self.items][-20:]}"
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


async def esl_commands(reader: asyncio.StreamReader) -> AsyncIterator[str]:
    """What an event-socket client sends, one command at a time (each ends with a blank line),
    until it closes the connection: how a FreeSWITCH written from its documents reads the gateway."""
    buf = b""
    while True:
        while b"\n\n" not in buf:
            data = await reader.read(4096)
            if not data:
                return
            buf += data
        raw, buf = buf.split(b"\n\n", 1)
        yield raw.decode()


def _matches(line: Written, event: str, payload: Any) -> bool:
    if line.match == "event":
        want = json.loads(line.text)
        return event == want["event"] and isinstance(payload, dict) and payload.get("streamSid") == want["streamSid"]
    if line.match == "close":
        return event == "close" and payload == int(line.text)
    if line.match == "binary":
        return event == "binary" and len(payload) == int(line.text)
    if line.channel == "esl" and event != "esl":
        return False
    if line.channel == "http" and event != "http":
        return False
    if not isinstance(payload, str):
        return False
    if line.match == "prefix":
        return payload.startswith(line.text)
    if line.match == "contains":
        return line.text in payload
    return payload == line.text


def check_expected(lines: list[Written], heard: Heard, channels: set[str]) -> list[int]:
    """Every ``to_peer`` line of ``channels`` is in what the gateway sent, in order; their indexes."""
    found: list[int] = []
    at = 0
    for line in (w for w in lines if w.direction == "to_peer" and w.channel in channels):
        for i in range(at, len(heard.items)):
            if _matches(line, *heard.items[i]):
                found.append(i)
                at = i + 1
                break
        else:
            sent = [(e, p if isinstance(p, (str, int)) else (p.get("event") if isinstance(p, dict) else len(p)))
                    for e, p in heard.items[at:at + 30]]
            raise AssertionError(f"the gateway did not send {line.match} {line.text[:80]!r} "
                                 f"({line.meta.get('note', '')}); after the last match it sent {sent}")
    return found


async def _send_timed(lines: list[Written], heard: Heard, send: Any, *, closed: asyncio.Event,
                      fill: Any = None) -> None:
    """Send ``from_peer`` lines on their schedule (``after_gateway`` shifts it) until ``closed``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for line in lines:
        if closed.is_set():
            return
        if line.after_gateway and not heard.count(line.after_gateway):
            waited = loop.time()
            await heard.wait_for(line.after_gateway)
            start += loop.time() - waited
        delay = start + line.t_ms / 1000.0 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if closed.is_set():
            return
        await send(line, fill(line) if fill is not None and line.audio else None)


# --- Twilio ---------------------------------------------------------------------------------------
async def play_twilio(http: aiohttp.ClientSession, base_url: str, lines: list[Written], *, ws_path: str,
                      caller_ulaw: bytes = b"") -> Heard:
    """Twilio's side of one stream: the timed messages, mark echoes, then the action request."""
    heard = Heard()
    closed = asyncio.Event()
    echoes = {w.echo: w for w in lines if w.direction == "from_peer" and w.echo}
    timed = [w for w in lines if w.direction == "from_peer" and w.channel == "ws" and not w.echo]
    caller = bytearray(caller_ulaw)
    ws = await http.ws_connect(base_url + ws_path)
    echoed = 0

    async def read() -> None:
        nonlocal echoed
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            heard.add(data.get("event", ""), data)
            reply = echoes.get(data.get("event", ""))
            if reply is not None:
                echoed += 1
                name = data.get(reply.echo, {}).get("name", "")
                await ws.send_str(reply.text.replace("{name}", name).replace("{seq}", str(10_000 + echoed)))
        closed.set()
        heard.add("close", ws.close_code)

    def fill(line: Written) -> bytes:
        chunk = bytes(caller[:160]).ljust(160, b"\xff")  # mu-law silence after the speech
        del caller[:160]
        return chunk

    async def send(line: Written, payload: bytes | None) -> None:
        text = line.text
        if payload is not None:
            import base64

            message = json.loads(text)
            message["media"]["payload"] = base64.b64encode(payload).decode()
            text = json.dumps(message)
        try:
            await ws.send_str(text)
        except ConnectionError:
            closed.set()

    reader = asyncio.create_task(read())
    try:
        await _send_timed(timed, heard, send, closed=closed, fill=fill)
        await asyncio.wait_for(closed.wait(), GATEWAY_WAIT_SECONDS)
    finally:
        await ws.close()
        await asyncio.gather(reader, return_exceptions=True)
    for line in (w for w in lines if w.direction == "from_peer" and w.channel == "http"):
        async with http.request(line.meta["method"], base_url + line.meta["path"], data=line.meta["form"]) as resp:
            heard.add("http", await resp.text())
    return heard


# --- FreeSWITCH -----------------------------------------------------------------------------------
class WrittenFreeSwitch:
    """FreeSWITCH's side of one outbound socket call, from a written session."""

    def __init__(self, lines: list[Written]):
        self.lines = lines
        self.replies = sorted(((w.reply_to, w.text) for w in lines if w.reply_to), key=lambda r: -len(r[0]))
        self.heard = Heard()
        self.audio_ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.http = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def call(self, port: int) -> "WrittenFreeSwitch":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.tasks.append(asyncio.create_task(self._esl()))
        return self

    async def _esl(self) -> None:
        try:
            async for command in esl_commands(self.reader):
                self.heard.add("esl", command)
                answer = next((text for prefix, text in self.replies if command.startswith(prefix)), None)
                assert answer is not None, f"the written session has no reply to {command!r}"
                self.writer.write(answer.encode())
                if command.startswith("api uuid_audio_stream") and answer.split("\n\n", 1)[-1].startswith("+OK"):
                    self.tasks.append(asyncio.create_task(self._audio(command)))
        except ConnectionError:
            pass
        self.closed.set()

    async def _audio(self, command: str) -> None:
        url = command.split(" ")[4]
        self.ws = await self.http.ws_connect(url)
        self.audio_ready.set()
        reader = asyncio.create_task(self._read_audio())
        timed = [w for w in self.lines if w.direction == "from_peer" and w.channel in ("esl", "audio")
                 and not w.reply_to]
        try:
            await _send_timed(timed, self.heard, self._send, closed=self.closed)
        finally:
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_audio(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.heard.add("binary", msg.data)

    async def _send(self, line: Written, payload: bytes | None) -> None:
        if line.channel == "esl":
            if not self.writer.is_closing():
                self.writer.write(line.text.encode())
            return
        assert self.ws is not None
        if self.ws.closed:
            return
        try:
            await (self.ws.send_bytes(line.data) if line.data else self.ws.send_str(line.text))
        except ConnectionError:
            pass

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        await self.http.close()
        self.writer.close()
