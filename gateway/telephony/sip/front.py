"""The SIP front: one address for the PBX, calls spread over the SIP worker processes.

A stateless proxy (RFC 3261 §16.11) on the gateway's SIP port, UDP:

- A new INVITE goes to the least loaded worker with room (a worker holds
  ``CALLS_PER_PROCESS`` calls); the front pushes its own Via, whose branch is derived from the
  caller's branch so that a CANCEL or a non-2xx ACK of the same transaction gets the same one,
  and remembers the Call-ID's worker. Trunk mode's peer check happens here (403), and a full
  gateway answers 486 itself.
- The worker's responses come back through the front (its Via is on top), which pops its Via
  and sends each on to the caller's Via (``received``/``rport`` honoured, RFC 3581).
- The worker's Contact is its own address, so the rest of the dialog (ACK of the 200, re-INVITE,
  BYE, INFO, REFER) flows between the PBX and the worker directly: the front holds no dialog
  state, and a front restart leaves calls up.
- Other requests outside a dialog (OPTIONS pings) go to any worker; CANCEL and ACK follow their
  INVITE's Call-ID. Datagrams that do not parse as SIP are counted and dropped.

The parsing helpers are sans-IO and bounded (``MAX_DATAGRAM``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65535
MAX_HEADERS = 100
BRANCH_PREFIX = "z9hG4bKvgwf"
"""Marks the front's Via: RFC 3261's magic cookie, then the front's own tag."""
ROUTE_TTL_S = 4 * 3600.0
"""A Call-ID's route is forgotten after this long even if no worker reported its end."""
PENDING_S = 10.0
"""A dispatched INVITE counts against its worker for this long before the worker reports it."""
ACK_WAIT_S = 32.0
"""How long the ACK of a worker's non-2xx final response is still sent to it (RFC 3261 Timer H)."""

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


def front_branch(msg: SipMessage) -> str:
    """The front's branch for a request: the same for an INVITE, its CANCEL and its non-2xx ACK."""
    top = msg.get_all("via")[0]
    branch = via_params(top)[3].get("branch", "")
    key = branch if branch.startswith("z9hG4bK") else f"{msg.call_id}|{msg.get('cseq').split()[0]}|{top}"
    return BRANCH_PREFIX + hashlib.sha1(key.encode()).hexdigest()[:20]


def reply(msg: SipMessage, code: int, reason: str, to_tag: str = "") -> SipMessage:
    """A response the front sends itself (403, 481, 483, 486)."""
    headers: list[tuple[str, str]] = []
    for key, value in msg.headers:
        name = COMPACT.get(key.lower(), key.lower())
        if name in ("via", "from", "call-id", "cseq"):
            headers.append((key, value))
        elif name == "to":
            headers.append((key, value if _TAG.search(value) or not to_tag else f"{value};tag={to_tag}"))
    headers.append(("Content-Length", "0"))
    return SipMessage(start=f"SIP/2.0 {code} {reason}", headers=headers, status=code)


@dataclass
class WorkerSlot:
    """The front's view of one worker: where it listens and which calls it holds."""

    index: int
    address: tuple[str, int] | None = None
    reported: set[str] = field(default_factory=set)
    pending: dict[str, float] = field(default_factory=dict)

    def load(self, now: float) -> int:
        for cid, since in list(self.pending.items()):
            if cid in self.reported or now - since > PENDING_S:
                del self.pending[cid]
        return len(self.reported | self.pending.keys())


class SipFront(asyncio.DatagramProtocol):
    """The UDP front on the gateway's SIP address (see the module docstring)."""

    def __init__(self, host: str, port: int, *, capacity: int, max_calls: int,
                 peer_allowed: Callable[[str], bool] = lambda source: True) -> None:
        self.host = host
        self.port = port
        self.capacity = capacity
        self.max_calls = max_calls
        self.peer_allowed = peer_allowed
        self.workers: dict[int, WorkerSlot] = {}
        self.routes: dict[str, tuple[int, float]] = {}  # Call-ID -> (worker, since)
        self.failed: dict[str, tuple[int, float]] = {}  # Call-ID -> (worker, since): awaits its ACK
        self.transport: asyncio.DatagramTransport | None = None
        self.counters = {"forwarded": 0, "responses": 0, "busy": 0, "forbidden": 0, "malformed": 0,
                         "unroutable": 0}
        self._rr = 0
        self._last_sweep = 0.0

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, self.port))
        assert self.transport is not None
        self.port = self.transport.get_extra_info("sockname")[1]

    @property
    def address(self) -> str:
        """``host:port`` the workers see the front as (its Via, a register worker's Contact)."""
        host = self.host if self.host not in ("", "0.0.0.0") else "127.0.0.1"
        return f"{host}:{self.port}"

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    # ---- workers --------------------------------------------------------------------------------
    def set_worker(self, index: int, address: tuple[str, int] | None) -> None:
        """A worker is ready at ``address`` (None: it is gone; its calls' routes are dropped)."""
        slot = self.workers.setdefault(index, WorkerSlot(index))
        slot.address = address
        if address is None:
            slot.reported.clear()
            slot.pending.clear()
            for cid, (w, _) in list(self.routes.items()):
                if w == index:
                    del self.routes[cid]

    def report(self, index: int, call_ids: list[str]) -> None:
        """A worker's calls in progress (its load); routes of calls it no longer has are dropped."""
        slot = self.workers.setdefault(index, WorkerSlot(index))
        gone = slot.reported - set(call_ids)
        slot.reported = set(call_ids)
        for cid in gone:
            route = self.routes.get(cid)
            if route is not None and route[0] == index:
                del self.routes[cid]

    def load(self) -> int:
        now = time.monotonic()
        return sum(slot.load(now) for slot in self.workers.values())

    def pick(self) -> WorkerSlot | None:
        """The least loaded worker with room, None when every worker is full."""
        now = time.monotonic()
        ready = [s for s in self.workers.values() if s.address is not None]
        if not ready or sum(s.load(now) for s in ready) >= self.max_calls:
            return None
        best = min(ready, key=lambda s: (s.load(now), s.index))
        return best if best.load(now) < self.capacity else None

    # ---- datagrams ------------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # CRLF keep-alive
        try:
            msg = parse(data)
        except SipParseError as exc:
            self.counters["malformed"] += 1
            log.debug("SIP front: dropped %d bytes from %s:%d: %s", len(data), addr[0], addr[1], exc)
            return
        try:
            if msg.status:
                self._response(msg)
            else:
                self._request(msg, addr)
        except (ValueError, IndexError) as exc:
            self.counters["malformed"] += 1
            log.debug("SIP front: unusable message from %s:%d: %s", addr[0], addr[1], exc)
        self._sweep()

    def _send(self, msg: SipMessage, target: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(msg.encode(), target)

    def _reply(self, msg: SipMessage, addr: tuple[str, int], code: int, reason: str) -> None:
        if msg.method == "ACK":
            return
        tag = hashlib.sha1(f"{msg.call_id}|{code}".encode()).hexdigest()[:10]
        out = reply(msg, code, reason, tag)
        vias = msg.get_all("via")
        self._send(out, response_target(stamp_received(vias[0], addr), addr[1]))

    def _request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        cid = msg.call_id
        forwards = msg.get("max-forwards")
        if forwards.isdigit() and int(forwards) <= 0:
            self._reply(msg, addr, 483, "Too Many Hops")
            return
        route = self.routes.get(cid)
        if route is None and msg.method == "ACK":
            route = self.failed.get(cid)  # the ACK of a worker's non-2xx final response
        slot = self.workers.get(route[0]) if route else None
        if slot is None or slot.address is None:
            if msg.method == "ACK":
                return  # the ACK of a response the front sent itself (403, 486)
            if msg.method == "CANCEL" or msg.to_tag:
                self.counters["unroutable"] += 1
                self._reply(msg, addr, 481, "Call/Transaction Does Not Exist")
                return
            source = f"{addr[0]}:{addr[1]}"
            if msg.method == "INVITE" and not self.peer_allowed(source):
                self.counters["forbidden"] += 1
                log.warning("SIP front: INVITE %s from %s refused (not a configured peer)", cid, source)
                self._reply(msg, addr, 403, "Forbidden")
                return
            slot = self.pick() if msg.method == "INVITE" else self._any()
            if slot is None or slot.address is None:
                self.counters["busy"] += 1
                log.warning("SIP front: %s %s from %s refused: every SIP worker is full or down",
                            msg.method, cid, source)
                self._reply(msg, addr, 486 if msg.method == "INVITE" else 503,
                            "Busy Here" if msg.method == "INVITE" else "Service Unavailable")
                return
            if msg.method == "INVITE":
                now = time.monotonic()
                self.routes[cid] = (slot.index, now)
                slot.pending[cid] = now
        if forwards.isdigit():
            msg.headers = [(k, str(int(v) - 1) if k.lower() == "max-forwards" else v) for k, v in msg.headers]
        # stamp the caller's Via, then push ours on top
        stamped = False
        headers: list[tuple[str, str]] = [("Via", f"SIP/2.0/UDP {self.address};branch={front_branch(msg)}")]
        for key, value in msg.headers:
            if not stamped and COMPACT.get(key.lower(), key.lower()) == "via":
                vias = _split_commas(value)
                vias[0] = stamp_received(vias[0].strip(), addr)
                value = ", ".join(v.strip() for v in vias)
                stamped = True
            headers.append((key, value))
        msg.headers = headers
        self.counters["forwarded"] += 1
        assert slot.address is not None
        self._send(msg, slot.address)

    def _any(self) -> WorkerSlot | None:
        ready = sorted((s for s in self.workers.values() if s.address is not None), key=lambda s: s.index)
        if not ready:
            return None
        self._rr = (self._rr + 1) % len(ready)
        return ready[self._rr]

    def _response(self, msg: SipMessage) -> None:
        vias = msg.get_all("via")
        top = vias[0]
        if not via_params(top)[3].get("branch", "").startswith(BRANCH_PREFIX) or len(vias) < 2:
            self.counters["unroutable"] += 1
            return
        # pop our Via (the first value of the first Via header)
        headers: list[tuple[str, str]] = []
        popped = False
        for key, value in msg.headers:
            if not popped and COMPACT.get(key.lower(), key.lower()) == "via":
                popped = True
                rest = _split_commas(value)[1:]
                if rest:
                    headers.append((key, ", ".join(v.strip() for v in rest)))
                continue
            headers.append((key, value))
        msg.headers = headers
        if msg.cseq_method == "INVITE" and msg.status >= 300:
            route = self.routes.pop(msg.call_id, None)
            if route is not None:
                self.workers[route[0]].pending.pop(msg.call_id, None)
                self.failed[msg.call_id] = (route[0], time.monotonic())
        self.counters["responses"] += 1
        self._send(msg, response_target(vias[1]))

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        for cid, (_, since) in list(self.routes.items()):
            if now - since > ROUTE_TTL_S:
                del self.routes[cid]
        for cid, (_, since) in list(self.failed.items()):
            if now - since > ACK_WAIT_S:
                del self.failed[cid]
