"""Asterisk Gateway Interface (AGI / FastAGI) wire protocol, sans-IO.

Facts this codec follows, as recorded from Asterisk 22.10.1 (``res_agi``):

* Every line from Asterisk ends in a bare ``\\n``. The environment block is ``agi_<name>: <value>``
  lines ended by an empty line; each line is written separately, so reads split it anywhere.
  Empty values are ``key: `` with a trailing space; extra AGI() arguments are ``agi_arg_N``.
  ``agi_network_script`` is everything after ``host:port/``, query string verbatim.
* Results: ``200 result=<r>[ (<data>)][ endpos=<n>]``; ``200 result= (timeout)`` (GET DATA with no
  input: an empty result); ``100 result=0 Trying...`` before a final line;
  ``510 Invalid or unknown command``; ``511 Command Not Permitted on a dead channel or intercept
  routine``; ``520-Invalid command syntax.  Proper usage follows:`` then usage lines (raw
  documentation markup, arriving in several reads) up to ``520 End of proper usage.``.
* ``HANGUP`` on a line of its own is a notification, not a result. It arrives after the
  ``200 result=-1`` of a command interrupted by a hangup, *and also* whenever the AGI session ends
  normally (the server closed its side), and twice with ``AGIEXITONHANGUP=yes``.
* A command sent while STREAM FILE or GET DATA runs cancels it and the cancelled command never
  answers; a cancelled WAIT FOR DIGIT answers a fake ``200 result=1``. So commands must never be
  pipelined: :class:`AgiConnection` refuses to send while a command is in flight.

Every read is bounded (line length, environment lines and bytes, usage text).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Union
from urllib.parse import parse_qsl

MAX_LINE_BYTES = 8192
"""Longest line accepted. Asterisk's own AGI buffer is 2048 bytes per command; results echo
variable values, which can be longer, so 8 KiB leaves room without being unbounded."""
MAX_ENV_LINES = 256
"""A real environment has about 22 lines plus one per AGI() argument (Asterisk caps those at 128)."""
MAX_ENV_BYTES = 32 * 1024
"""A real environment is well under 2 KiB."""
MAX_USAGE_BYTES = 64 * 1024
"""Bound on a multi-line 520 usage block."""


class ProtocolError(Exception):
    """The peer broke the AGI protocol; the connection cannot continue."""


class PipeliningError(RuntimeError):
    """A command was sent before the previous one answered (Asterisk would cancel it silently)."""


# ---------------------------------------------------------------------------------------------
# Environment block
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AgiEnvironment:
    """The ``agi_*`` variables Asterisk sends when the session starts (keys without ``agi_``)."""

    variables: dict[str, str]

    def get(self, key: str, default: str = "") -> str:
        return self.variables.get(key, default)

    @property
    def network_script(self) -> str:
        """``voicebot?lang=en`` for ``agi://host:4573/voicebot?lang=en``."""
        return self.get("network_script")

    @property
    def script_path(self) -> str:
        """The route part of ``network_script``, without the query string and slashes around it."""
        return self.network_script.split("?", 1)[0].strip("/")

    @property
    def query(self) -> dict[str, str]:
        """The query string of ``network_script``, parsed (Asterisk passes it verbatim)."""
        parts = self.network_script.split("?", 1)
        return dict(parse_qsl(parts[1], keep_blank_values=True)) if len(parts) == 2 else {}

    @property
    def args(self) -> list[str]:
        """``agi_arg_1``.. in order (an empty argument is kept as ``""``)."""
        out = []
        n = 1
        while f"arg_{n}" in self.variables:
            out.append(self.variables[f"arg_{n}"])
            n += 1
        return out

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def caller_id(self) -> str:
        """The caller's number, or "" when Asterisk reports ``unknown``."""
        value = self.get("callerid")
        return "" if value == "unknown" else value

    @property
    def dialed(self) -> str:
        """DNID when known, else the extension."""
        dnid = self.get("dnid")
        return dnid if dnid and dnid != "unknown" else self.get("extension")


class EnvironmentParser:
    """Reads the environment block: ``receive_data`` returns the environment once complete."""

    def __init__(self, max_lines: int = MAX_ENV_LINES, max_bytes: int = MAX_ENV_BYTES):
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._variables: dict[str, str] = {}
        self._lines = 0
        self._total = 0
        self.failed = False
        self.environment: AgiEnvironment | None = None
        self.leftover = b""

    def receive_data(self, data: bytes) -> AgiEnvironment | None:
        if self.failed:
            raise ProtocolError("environment already refused")
        if self.environment is not None:
            self.leftover += data
            return self.environment
        self._buffer += data
        while True:
            idx = self._buffer.find(b"\n")
            if idx < 0:
                if len(self._buffer) > MAX_LINE_BYTES:
                    raise self._fail(f"environment line longer than {MAX_LINE_BYTES} bytes")
                return None
            line = bytes(self._buffer[:idx])
            del self._buffer[:idx + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if not self._variables:
                    raise self._fail("empty line before any agi_ variable: not an AGI environment")
                self.environment = AgiEnvironment(dict(self._variables))
                self.leftover = bytes(self._buffer)
                self._buffer.clear()
                return self.environment
            self._add_line(line)

    def _add_line(self, line: bytes) -> None:
        self._lines += 1
        self._total += len(line) + 1
        if self._lines > self.max_lines:
            raise self._fail(f"environment has more than {self.max_lines} lines")
        if self._total > self.max_bytes:
            raise self._fail(f"environment larger than {self.max_bytes} bytes")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("latin-1")
        key, sep, value = text.partition(":")
        if not sep or not key.startswith("agi_") or not key[4:] or not key.replace("_", "").isalnum():
            raise self._fail(f"not an AGI environment line: {text[:60]!r}")
        self._variables[key[4:]] = value[1:] if value.startswith(" ") else value

    def _fail(self, message: str) -> ProtocolError:
        self.failed = True
        self._buffer.clear()
        return ProtocolError(message)


def encode_environment(variables: dict[str, str]) -> bytes:
    """The environment block as Asterisk writes it (for test peers)."""
    lines = "".join(f"agi_{k}: {v}\n" for k, v in variables.items())
    return (lines + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Response:
    """A final answer to a command."""

    code: int
    result: str = ""
    data: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    line: str = ""
    usage: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def value(self) -> int | None:
        """``result`` as an int (None when empty, as in ``200 result= (timeout)``)."""
        try:
            return int(self.result)
        except ValueError:
            return None

    @property
    def digit(self) -> str:
        """The DTMF digit a STREAM FILE / WAIT FOR DIGIT returned (ASCII code), or ""."""
        value = self.value
        return chr(value) if value is not None and 32 < value < 127 else ""

    @property
    def endpos(self) -> int | None:
        raw = self.attrs.get("endpos")
        return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None

    @property
    def dead_channel(self) -> bool:
        return self.code == 511


@dataclass(frozen=True)
class Trying:
    """``100 result=0 Trying...``: a final line follows."""

    line: str


@dataclass(frozen=True)
class HangupNotice:
    """A ``HANGUP`` line: the channel hung up *or* the AGI session is ending."""


Message = Union[Response, Trying, HangupNotice]

_RESULT = re.compile(r"^result=(\S*)(.*)$")
_DATA_ATTRS = re.compile(r"^ \((.*)\)((?: [A-Za-z_]+=\S*)*)$")
_ATTRS = re.compile(r"^((?: [A-Za-z_]+=\S*)*)$")


def parse_result_line(line: str) -> Response | Trying:
    """Parse one non-HANGUP result line (not the 520 continuation)."""
    code_text, _, rest = line.partition(" ")
    if len(code_text) != 3 or not code_text.isdigit():
        raise ProtocolError(f"not an AGI result line: {line[:80]!r}")
    code = int(code_text)
    if code == 100:
        return Trying(line)
    if code != 200:
        return Response(code, line=line, data=rest)
    match = _RESULT.match(rest)
    if not match:
        raise ProtocolError(f"200 line without result=: {line[:80]!r}")
    result, tail = match.groups()
    data: str | None = None
    attrs_text = ""
    dm = _DATA_ATTRS.match(tail)
    if dm:
        data, attrs_text = dm.groups()
    elif _ATTRS.match(tail):
        attrs_text = tail
    else:
        data = tail.strip()
    attrs = dict(item.split("=", 1) for item in attrs_text.split())
    return Response(200, result=result, data=data, attrs=attrs, line=line)


class ResponseParser:
    """Incremental parser of what Asterisk sends after the environment."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._usage: list[str] | None = None
        self._usage_bytes = 0
        self._usage_head = ""

    def receive_data(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while True:
            idx = self._buffer.find(b"\n")
            if idx < 0:
                if len(self._buffer) > MAX_LINE_BYTES:
                    raise ProtocolError(f"AGI line longer than {MAX_LINE_BYTES} bytes")
                return out
            raw = bytes(self._buffer[:idx])
            del self._buffer[:idx + 1]
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            msg = self._line(line)
            if msg is not None:
                out.append(msg)

    def _line(self, line: str) -> Message | None:
        if self._usage is not None:
            if line.startswith("520 "):
                usage = "\n".join(self._usage)
                self._usage = None
                return Response(520, line=self._usage_head, data=line[4:], usage=usage)
            self._usage_bytes += len(line) + 1
            if self._usage_bytes > MAX_USAGE_BYTES:
                raise ProtocolError(f"520 usage text longer than {MAX_USAGE_BYTES} bytes")
            self._usage.append(line)
            return None
        if line == "HANGUP":
            return HangupNotice()
        if line.startswith("520-"):
            self._usage = []
            self._usage_bytes = 0
            self._usage_head = line
            return None
        if not line:
            return None
        return parse_result_line(line)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

_PLAIN = re.compile(r'^[^\s"\\]+$')


class Quoted(str):
    """An argument always sent in quotes (escape digits: ``"0123456789*#"``, as Asterisk's
    documentation writes them)."""


def quote(arg: str) -> str:
    """Quote one argument the way res_agi's parser reads it (``""`` for an empty one)."""
    if _PLAIN.match(arg) and not isinstance(arg, Quoted):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(name: str, *args: str | int) -> bytes:
    """``format_command("SET VARIABLE", "X", "a b") == b'SET VARIABLE X "a b"\\n'``.

    ``name`` is the command words as is; each argument is quoted when needed. Newlines are
    refused (they would start another command).
    """
    words = [name] + [quote(a if isinstance(a, str) else str(a)) for a in args]
    text = " ".join(words)
    if "\n" in text or "\r" in text:
        raise ValueError("AGI command arguments cannot contain line breaks")
    data = (text + "\n").encode("utf-8")
    if len(data) > 2048:
        raise ValueError("AGI command longer than Asterisk's 2048-byte buffer")
    return data


class ConnState(enum.Enum):
    ENVIRONMENT = "environment"
    IDLE = "idle"
    WAITING = "waiting"
    FAILED = "failed"


class AgiConnection:
    """One FastAGI session seen from the server side: environment, then one command at a time."""

    def __init__(self, max_env_lines: int = MAX_ENV_LINES, max_env_bytes: int = MAX_ENV_BYTES):
        self._env = EnvironmentParser(max_env_lines, max_env_bytes)
        self._responses = ResponseParser()
        self.state = ConnState.ENVIRONMENT
        self.environment: AgiEnvironment | None = None
        self.pending_command = ""
        self.hangup_notices = 0
        self.dead = False

    def receive_data(self, data: bytes) -> list[AgiEnvironment | Message]:
        """Feed bytes; returns the environment (once) and the messages completed."""
        if self.state is ConnState.FAILED:
            raise ProtocolError("connection already failed")
        out: list[AgiEnvironment | Message] = []
        try:
            if self.state is ConnState.ENVIRONMENT:
                env = self._env.receive_data(data)
                if env is None:
                    return out
                self.environment = env
                self.state = ConnState.IDLE
                out.append(env)
                data = self._env.leftover
            for msg in self._responses.receive_data(data):
                if isinstance(msg, HangupNotice):
                    self.hangup_notices += 1
                elif isinstance(msg, Response):
                    if self.state is ConnState.WAITING:
                        self.state = ConnState.IDLE
                        self.pending_command = ""
                    if msg.dead_channel:
                        self.dead = True
                out.append(msg)
        except ProtocolError:
            self.state = ConnState.FAILED
            raise
        return out

    def send(self, name: str, *args: str | int) -> bytes:
        """Bytes of one command. Raises PipeliningError while another command is unanswered."""
        if self.state is ConnState.WAITING:
            raise PipeliningError(
                f"command {name!r} sent while {self.pending_command!r} is unanswered; Asterisk would "
                "cancel the running command and never answer it")
        if self.state is not ConnState.IDLE:
            raise ProtocolError(f"cannot send a command in state {self.state.value}")
        data = format_command(name, *args)
        self.state = ConnState.WAITING
        self.pending_command = name
        return data
