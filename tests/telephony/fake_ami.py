"""A fake Asterisk Manager that replays a recorded AMI session over a real TCP socket.

The recording (``ami/*.jsonl``) is cut into the banner and *exchanges*: one action the
recorded client sent and every byte Asterisk sent after it until the next action. When the
client under test sends an action, the server answers with the next exchange of the same
``Action`` (or, for a repeat the recording does not have, the last exchange of that action),
writing the recorded chunks as they were read from Asterisk. The only bytes changed are the
recorded ActionID, replaced by the client's own (panoramisk matches responses and the async
``OriginateResponse`` event by it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tests.telephony.fixtures import Chunk

EOM = b"\r\n\r\n"
MAX_ACTION_BYTES = 64 * 1024


def parse_action(data: bytes) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for line in data.decode("utf-8").split("\r\n"):
        if ": " in line:
            key, value = line.split(": ", 1)
            headers.setdefault(key.lower(), []).append(value)
    return headers


@dataclass
class Exchange:
    action: dict[str, list[str]]
    replies: list[bytes] = field(default_factory=list)
    closes: bool = False

    @property
    def name(self) -> str:
        return self.action.get("action", [""])[0].lower()

    @property
    def action_id(self) -> str:
        return self.action.get("actionid", [""])[0]


def exchanges(chunks: list[Chunk]) -> tuple[bytes, list[Exchange]]:
    banner = b""
    out: list[Exchange] = []
    for chunk in chunks:
        if not chunk.from_asterisk:
            if chunk.data:
                out.append(Exchange(parse_action(chunk.data)))
            continue
        if not chunk.data:
            if chunk.event.startswith("eof") and out:
                out[-1].closes = True
            continue
        if out:
            out[-1].replies.append(chunk.data)
        else:
            banner += chunk.data
    return banner, out


class ReplayAmi:
    """Serve a recorded AMI session to every connection (``drop_after_login``: the first
    connection is closed right after the login exchange, to test reconnects)."""

    def __init__(self, chunks: list[Chunk], *, drop_after_login: bool = False,
                 extra: list[Chunk] | None = None):
        self.banner, self.exchanges = exchanges(chunks)
        self.spare = exchanges(extra)[1] if extra else []
        self.drop_after_login = drop_after_login
        self.received: list[dict[str, list[str]]] = []
        self.raw: list[bytes] = []
        self.connections = 0
        self.unmatched: list[str] = []
        self.served = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop_all(self) -> None:
        """Close every client connection (as a restarting Asterisk would)."""
        for w in self._writers:
            w.close()

    def names(self) -> list[str]:
        return [a["action"][0] for a in self.received]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        index = 0
        writer.write(self.banner)
        buf = b""
        try:
            while True:
                while EOM not in buf:
                    data = await reader.read(4096)
                    if not data:
                        return
                    buf += data
                    assert len(buf) < MAX_ACTION_BYTES
                raw, buf = buf.split(EOM, 1)
                self.raw.append(raw + EOM)
                action = parse_action(raw + EOM)
                self.received.append(action)
                name = action["action"][0].lower()
                exchange = None
                for j in range(index, len(self.exchanges)):
                    if self.exchanges[j].name == name:
                        exchange, index = self.exchanges[j], j + 1
                        break
                if exchange is None:
                    pool = [e for e in self.exchanges + self.spare if e.name == name]
                    if not pool:
                        self.unmatched.append(name)
                        writer.write(b"Response: Error\r\nActionID: " + action["actionid"][0].encode()
                                     + b"\r\nMessage: Invalid/unknown command\r\n\r\n")
                        continue
                    exchange = pool[-1]
                client_id = action["actionid"][0].encode() + b"\r\n"
                for reply in exchange.replies:
                    writer.write(reply.replace(exchange.action_id.encode() + b"\r\n", client_id))
                    await writer.drain()
                if name == "logoff" or exchange.closes:
                    writer.close()
                    return
                if name == "login" and self.drop_after_login and self.connections == 1:
                    await asyncio.sleep(0.05)
                    writer.close()
                    return
                if index >= len(self.exchanges):
                    self.served.set()
        except (ConnectionError, OSError):
            return
