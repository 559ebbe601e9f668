"""FreeSWITCH event socket (ESL) wire format, sans-IO: bytes in, typed messages out.

Every message from FreeSWITCH is a block of ``Name: value`` header lines ended by an empty
line; when a ``Content-Length`` header is present, that many bytes of body follow::

    Content-Type: command/reply
    Reply-Text: +OK

    Content-Type: api/response
    Content-Length: 12

    +OK Success

    Content-Length: 512
    Content-Type: text/event-plain

    Event-Name: DTMF
    Unique-ID: 9c2b...
    DTMF-Digit: 5
    ...

In outbound mode (dialplan ``socket`` application) the gateway is the server: it sends
``connect`` and the reply carries the whole channel (``Unique-ID``, ``Caller-Caller-ID-Number``,
``Caller-Destination-Number``, ``variable_*``), header values URL-encoded as in plain events.
Commands are a line, optional header lines, and an empty line (``sendmsg`` carries
``call-command: execute`` / ``execute-app-name`` / ``execute-app-arg``, or ``call-command:
hangup``); replies come back in the order the commands were sent, between events.

Limits: a header block larger than ``max_header_bytes`` or a body larger than
``max_body_bytes`` is a :class:`ProtocolError`, and the parser stays failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

MAX_HEADER_BYTES = 64 * 1024
"""The ``connect`` reply lists every channel variable: typically 5-20 kB."""
MAX_BODY_BYTES = 1024 * 1024
"""Plain events with all channel variables (CHANNEL_HANGUP_COMPLETE) are some tens of kB."""
MAX_HEADERS = 2000


class ProtocolError(ValueError):
    """FreeSWITCH (or whatever connected) sent something that is not ESL."""


@dataclass(frozen=True)
class EslMessage:
    """One message: its outer headers and body."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        """``Reply-Text`` of a ``command/reply``, the body of an ``api/response``."""
        if self.content_type == "api/response":
            return self.body.decode("utf-8", "replace").strip()
        return self.headers.get("Reply-Text", "")

    @property
    def ok(self) -> bool:
        return self.reply_text.startswith("+OK")

    def event(self) -> "EslEvent":
        """The event in a ``text/event-plain`` message."""
        if self.content_type != "text/event-plain":
            raise ProtocolError(f"not a plain event: {self.content_type!r}")
        return parse_plain_event(self.body)


@dataclass(frozen=True)
class EslEvent:
    """A plain-format event: URL-decoded headers and the optional event body."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def subclass(self) -> str:
        return self.headers.get("Event-Subclass", "")

    def get(self, key: str, default: str = "") -> str:
        return self.headers.get(key, default)


def parse_headers(block: bytes, *, decode: bool = True) -> dict[str, str]:
    """``Name: value`` lines (values URL-decoded when ``decode``); bad lines are a ProtocolError."""
    headers: dict[str, str] = {}
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("header block is not UTF-8") from None
    lines = [line for line in text.split("\n") if line.strip("\r")]
    if len(lines) > MAX_HEADERS:
        raise ProtocolError(f"more than {MAX_HEADERS} header lines")
    for line in lines:
        name, sep, value = line.rstrip("\r").partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise ProtocolError(f"bad header line {line[:60]!r}")
        value = value.strip()
        headers[name] = unquote(value) if decode else value
    return headers


def parse_plain_event(body: bytes) -> EslEvent:
    """The body of a ``text/event-plain`` message: headers, then an optional inner body."""
    head, sep, rest = body.partition(b"\n\n")
    headers = parse_headers(head)
    inner = b""
    length = headers.get("Content-Length")
    if length is not None:
        if not length.isdigit() or int(length) > len(rest):
            raise ProtocolError(f"event body length {length!r} does not fit the message")
        inner = rest[: int(length)]
    return EslEvent(headers, inner)


class EslParser:
    """Incremental parser of one event socket connection."""

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES):
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._headers: dict[str, str] | None = None
        self._need = 0
        self.error = ""

    def receive_data(self, data: bytes) -> list[EslMessage]:
        """Feed bytes; return every message completed by them."""
        if self.error:
            raise ProtocolError(f"connection already failed: {self.error}")
        self._buf += data
        out: list[EslMessage] = []
        try:
            while True:
                msg = self._next()
                if msg is None:
                    return out
                out.append(msg)
        except ProtocolError as exc:
            self.error = str(exc)
            raise

    def receive_eof(self) -> None:
        """The peer closed; a half-received message is an error."""
        if self._buf.strip() or self._headers is not None:
            self.error = "connection closed in the middle of a message"
            raise ProtocolError(self.error)

    def _next(self) -> EslMessage | None:
        if self._headers is None:
            while self._buf[:1] in (b"\n", b"\r"):  # stray blank lines between messages
                del self._buf[:1]
            end = self._buf.find(b"\n\n")
            if end < 0:
                if len(self._buf) > self.max_header_bytes:
                    raise ProtocolError(f"header block longer than {self.max_header_bytes} bytes")
                return None
            if end > self.max_header_bytes:
                raise ProtocolError(f"header block longer than {self.max_header_bytes} bytes")
            block = bytes(self._buf[:end])
            del self._buf[: end + 2]
            headers = parse_headers(block, decode=True)
            length = headers.get("Content-Length", "0")
            if not length.isdigit():
                raise ProtocolError(f"bad Content-Length {length[:20]!r}")
            self._need = int(length)
            if self._need > self.max_body_bytes:
                raise ProtocolError(f"body of {self._need} bytes (limit {self.max_body_bytes})")
            self._headers = headers
        if len(self._buf) < self._need:
            return None
        body = bytes(self._buf[: self._need])
        del self._buf[: self._need]
        headers, self._headers, self._need = self._headers, None, 0
        return EslMessage(headers, body)


# --- what the gateway sends -----------------------------------------------------------------
def _clean(value: str, what: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"{what} must not contain a line break: {value[:60]!r}")
    return value


def encode_command(line: str, headers: dict[str, str] | None = None) -> bytes:
    """A command: its line, optional header lines, and the empty line that ends it."""
    parts = [_clean(line, "command")]
    for name, value in (headers or {}).items():
        parts.append(f"{_clean(name, 'header name')}: {_clean(str(value), name)}")
    return ("\n".join(parts) + "\n\n").encode("utf-8")


def encode_api(command: str) -> bytes:
    """``api <command>``: a blocking API call answered by ``api/response``."""
    return encode_command(f"api {command}")


def encode_execute(app: str, arg: str = "", *, lock: bool = True) -> bytes:
    """``sendmsg`` running a dialplan application on the socket's channel."""
    headers = {"call-command": "execute", "execute-app-name": app}
    if arg:
        headers["execute-app-arg"] = arg
    if lock:
        headers["event-lock"] = "true"
    return encode_command("sendmsg", headers)


def encode_hangup(cause: str = "NORMAL_CLEARING") -> bytes:
    """``sendmsg`` hanging up the socket's channel."""
    return encode_command("sendmsg", {"call-command": "hangup", "hangup-cause": cause})


@dataclass
class ChannelInfo:
    """What the ``connect`` reply says about the call."""

    uuid: str
    caller_id: str = ""
    dialed: str = ""
    conversation_id: str = ""
    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_connect(cls, msg: EslMessage, conversation_var: str) -> "ChannelInfo":
        h = msg.headers
        uuid = h.get("Unique-ID") or h.get("Channel-Unique-ID") or h.get("Caller-Unique-ID", "")
        if not uuid:
            raise ProtocolError("connect reply without Unique-ID")
        return cls(uuid, h.get("Caller-Caller-ID-Number", ""), h.get("Caller-Destination-Number", ""),
                   h.get("variable_" + conversation_var, ""),
                   {k[9:]: v for k, v in h.items() if k.startswith("variable_")})
