"""SIP messages as the SIP front handles them, sans-IO: parse one datagram, read its Via, build a
response the front sends itself. Bounded: ``MAX_DATAGRAM`` bytes, ``MAX_HEADERS`` headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DATAGRAM = 65535
MAX_HEADERS = 100
COMPACT = {"i": "call-id", "v": "via", "f": "from", "t": "to", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}
_TAG = re.compile(r";\s*tag=", re.I)


class SipParseError(ValueError):
    """A datagram that is not a SIP message."""


@dataclass
class SipMessage:
    """A parsed SIP message: start line, headers in order (original names), body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    method: str = ""
    status: int = 0

    def get(self, name: str) -> str:
        """The first header ``name`` (full name, lower case; compact forms match)."""
        for key, value in self.headers:
            if COMPACT.get(key.lower(), key.lower()) == name:
                return value
        return ""

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, comma-separated values split (for Via)."""
        out: list[str] = []
        for key, value in self.headers:
            if COMPACT.get(key.lower(), key.lower()) == name:
                out.extend(v.strip() for v in _split_commas(value))
        return out

    @property
    def call_id(self) -> str:
        return self.get("call-id")

    @property
    def cseq_method(self) -> str:
        parts = self.get("cseq").split()
        return parts[1].upper() if len(parts) == 2 else ""

    @property
    def to_tag(self) -> bool:
        return bool(_TAG.search(self.get("to")))

    def encode(self) -> bytes:
        lines = [self.start] + [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    out, cur, depth, quoted = [], [], 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(depth - 1, 0)
        if ch == "," and not quoted and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [v for v in out if v.strip()]


def parse(data: bytes) -> SipMessage:
    """Parse one datagram; ``SipParseError`` when it is not a SIP request or response."""
    if len(data) > MAX_DATAGRAM:
        raise SipParseError("datagram too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.split("\r\n")
    start = lines[0]
    msg = SipMessage(start=start, headers=[], body=body)
    if start.startswith("SIP/2.0 "):
        code = start[8:11]
        if not code.isdigit():
            raise SipParseError("bad status line")
        msg.status = int(code)
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[0].isalpha():
            raise SipParseError("bad request line")
        msg.method = parts[0].upper()
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and msg.headers:  # folded continuation
            key, value = msg.headers[-1]
            msg.headers[-1] = (key, value + " " + line.strip())
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise SipParseError(f"bad header line {line[:40]!r}")
        msg.headers.append((key.strip(), value.strip()))
        if len(msg.headers) > MAX_HEADERS:
            raise SipParseError("too many headers")
    if not msg.call_id or not msg.get("via") or not msg.get("cseq"):
        raise SipParseError("missing Call-ID, Via or CSeq")
    return msg


def via_params(via: str) -> tuple[str, str, int, dict[str, str]]:
    """``SIP/2.0/UDP host:port;k=v`` -> (transport, host, port (0 if absent), params)."""
    proto, _, rest = via.strip().partition(" ")
    sent_by, *params = [p.strip() for p in rest.strip().split(";")]
    host, port = sent_by, 0
    if sent_by.startswith("["):
        end = sent_by.find("]")
        host, tail = sent_by[1:end], sent_by[end + 1:]
        port = int(tail[1:]) if tail.startswith(":") and tail[1:].isdigit() else 0
    elif sent_by.count(":") == 1:
        host, p = sent_by.split(":")
        port = int(p) if p.isdigit() else 0
    kv: dict[str, str] = {}
    for p in params:
        k, _, v = p.partition("=")
        kv[k.strip().lower()] = v.strip()
    return proto.rsplit("/", 1)[-1].upper(), host, port, kv


def response_target(via: str, default_port: int = 5060) -> tuple[str, int]:
    """Where a response to a request with this top ``via`` goes (RFC 3261 18.2.2, RFC 3581)."""
    _, host, port, kv = via_params(via)
    if kv.get("received"):
        host = kv["received"]
    if kv.get("rport", "").isdigit():
        return host, int(kv["rport"])
    return host, port or default_port


def stamp_received(via: str, source: tuple[str, int]) -> str:
    """The caller's Via as a proxy forwards it: ``received`` and a filled ``rport`` (RFC 3581)."""
    _, host, _, kv = via_params(via)
    head, *params = via.split(";")
    out = []
    for p in params:
        key = p.partition("=")[0].strip().lower()
        if key in ("received", "rport"):
            continue
        out.append(p.strip())
    if "rport" in kv:
        out.append(f"rport={source[1]}")
    if host != source[0] or "rport" in kv:
        out.append(f"received={source[0]}")
    return ";".join([head.strip()] + out)


def reply(msg: SipMessage, code: int, reason: str, to_tag: str = "",
          extra: tuple[tuple[str, str], ...] = ()) -> SipMessage:
    """A response the front sends itself (403, 481, 483, 486, 503)."""
    headers: list[tuple[str, str]] = []
    for key, value in msg.headers:
        name = COMPACT.get(key.lower(), key.lower())
        if name in ("via", "from", "call-id", "cseq"):
            headers.append((key, value))
        elif name == "to":
            headers.append((key, value if _TAG.search(value) or not to_tag else f"{value};tag={to_tag}"))
    headers.extend(extra)
    headers.append(("Content-Length", "0"))
    return SipMessage(start=f"SIP/2.0 {code} {reason}", headers=headers, status=code)


_CSEQ = re.compile(r"^\d{1,10} [A-Za-z]+$")


def malformed_invite(msg: SipMessage) -> str:
    """Why a new INVITE is not one a SIP stack would take ('' when it looks right): the front
    answers 400 instead of handing a worker what pjsip would drop unanswered (RFC 3261 8.2, 20.14,
    20.16)."""
    cseq = msg.get("cseq")
    if not _CSEQ.match(cseq) or cseq.split()[1].upper() != msg.method:
        return f"CSeq {cseq[:40]!r} is not '<number> {msg.method}'"
    length = msg.get("content-length")
    if length and (not length.isdigit() or int(length) != len(msg.body)):
        return f"Content-Length {length[:20]!r} does not match a {len(msg.body)}-byte body"
    if not msg.get("from") or not msg.get("to"):
        return "no From or To"
    return ""
