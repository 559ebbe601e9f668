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
- Floods stop here, before a worker's pjsua allocates anything for them: a source address not
  listed in ``sip.peers`` that starts calls faster than ``source_calls_per_second`` is dropped
  silently (a flooder learns nothing; its retransmissions count against it too), and new calls
  beyond ``new_calls_per_second`` for the whole node get 503 with Retry-After; an INVITE body
  over ``MAX_INVITE_BODY`` gets 413. Measured: pjsua2
  aborts its process when INVITEs arrive faster than its socket table recycles (each INVITE
  opens RTP and RTCP sockets, closed sockets are held 500 ms: at 200 INVITEs a second a process
  died within 2 s), so nothing reaches a worker faster than the front lets it.

The wire helpers are sans-IO and bounded (:mod:`gateway.telephony.sip.message`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from gateway.limits import TokenBuckets
from gateway.telephony.sip.message import (  # noqa: F401  (re-exported: the front's wire helpers)
    COMPACT,
    MAX_DATAGRAM,
    MAX_HEADERS,
    SipMessage,
    SipParseError,
    _split_commas,
    malformed_invite,
    parse,
    reply,
    response_target,
    stamp_received,
    via_params,
)

log = logging.getLogger(__name__)

BRANCH_PREFIX = "z9hG4bKvgwf"
"""Marks the front's Via: RFC 3261's magic cookie, then the front's own tag."""
ROUTE_TTL_S = 4 * 3600.0
"""A Call-ID's route is forgotten after this long even if no worker reported its end."""
PENDING_S = 10.0
"""A dispatched INVITE counts against its worker for this long before the worker reports it."""
UNANSWERED_S = 2.0
"""...but only this long while the worker has not answered it at all (pjsua says 100 Trying at
once to any INVITE it can parse): an INVITE the worker drops holds no room for long."""
ACK_WAIT_S = 32.0
"""How long the ACK of a worker's non-2xx final response is still sent to it (RFC 3261 Timer H)."""
BURST_SECONDS = 2.0
"""The call rates allow a burst of this many seconds' worth of calls at once."""
MAX_INVITE_BODY = 8192
"""Largest INVITE body the front forwards; larger gets 413 (an offer is 300 bytes to 2 KB; a
worker's SIP stack would otherwise parse up to a whole 64 KB datagram per INVITE)."""
FLOOD_LOG_S = 10.0
"""A flooding source is logged once per this many seconds (not once per dropped INVITE)."""


def front_branch(msg: SipMessage) -> str:
    """The front's branch for a request: the same for an INVITE, its CANCEL and its non-2xx ACK."""
    top = msg.get_all("via")[0]
    branch = via_params(top)[3].get("branch", "")
    key = branch if branch.startswith("z9hG4bK") else f"{msg.call_id}|{msg.get('cseq').split()[0]}|{top}"
    return BRANCH_PREFIX + hashlib.sha1(key.encode()).hexdigest()[:20]



@dataclass
class WorkerSlot:
    """The front's view of one worker: where it listens and which calls it holds."""

    index: int
    address: tuple[str, int] | None = None
    reported: set[str] = field(default_factory=set)
    pending: dict[str, float] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    """Pending INVITEs the worker has responded to."""

    def load(self, now: float) -> int:
        for cid, since in list(self.pending.items()):
            if (cid in self.reported or now - since > PENDING_S
                    or (cid not in self.answered and now - since > UNANSWERED_S)):
                del self.pending[cid]
                self.answered.discard(cid)
        return len(self.reported | self.pending.keys())


class SipFront(asyncio.DatagramProtocol):
    """The UDP front on the gateway's SIP address (see the module docstring)."""

    def __init__(self, host: str, port: int, *, capacity: int, max_calls: int,
                 peer_allowed: Callable[[str], bool] = lambda source: True,
                 new_calls_per_second: float = 0.0, source_calls_per_second: float = 0.0,
                 rate_exempt: Callable[[str], bool] = lambda source: False,
                 node_full: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.port = port
        self.capacity = capacity
        self.max_calls = max_calls
        self.peer_allowed = peer_allowed
        self.rate_exempt = rate_exempt
        self.node_full = node_full  # the node holds voice.max_calls calls over every voice server
        self.clock = clock
        self._node_rate = TokenBuckets(new_calls_per_second * 60, clock=clock,
                                       capacity=max(1.0, new_calls_per_second * BURST_SECONDS)) \
            if new_calls_per_second > 0 else None
        self._source_rate = TokenBuckets(source_calls_per_second * 60, clock=clock,
                                         capacity=max(1.0, source_calls_per_second * BURST_SECONDS)) \
            if source_calls_per_second > 0 else None
        self._flood_logged: dict[str, float] = {}
        self.workers: dict[int, WorkerSlot] = {}
        self.routes: dict[str, tuple[int, float]] = {}  # Call-ID -> (worker, since)
        self.failed: dict[str, tuple[int, float]] = {}  # Call-ID -> (worker, since): awaits its ACK
        self.transport: asyncio.DatagramTransport | None = None
        self.counters = {"forwarded": 0, "responses": 0, "busy": 0, "forbidden": 0, "malformed": 0,
                         "unroutable": 0, "flood_dropped": 0, "rate_refused": 0, "too_large": 0}
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
            slot.answered.clear()
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

    def _reply(self, msg: SipMessage, addr: tuple[str, int], code: int, reason: str,
               extra: tuple[tuple[str, str], ...] = ()) -> None:
        if msg.method == "ACK":
            return
        tag = hashlib.sha1(f"{msg.call_id}|{code}".encode()).hexdigest()[:10]
        out = reply(msg, code, reason, tag, extra)
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
                if self._first_in_a_while(f"forbidden {addr[0]}"):  # a stranger's flood: one line, not one each
                    log.warning("SIP front: INVITE %s from %s refused (not a configured peer; %d so far)", cid,
                                source, self.counters["forbidden"])
                self._reply(msg, addr, 403, "Forbidden")
                return
            if msg.method == "INVITE" and not self._rate_allows(msg, addr, source):
                return
            problem = malformed_invite(msg) if msg.method == "INVITE" else ""
            if problem:
                self.counters["malformed"] += 1
                if self._first_in_a_while("malformed"):
                    log.warning("SIP front: INVITE %s from %s refused with 400: %s", cid, source, problem)
                self._reply(msg, addr, 400, "Bad Request")
                return
            if msg.method == "INVITE" and len(msg.body) > MAX_INVITE_BODY:
                self.counters["too_large"] += 1
                if self._first_in_a_while("too_large"):
                    log.warning("SIP front: INVITE %s from %s refused with 413: a %d-byte body (%d so far)",
                                cid, source, len(msg.body), self.counters["too_large"])
                self._reply(msg, addr, 413, "Request Entity Too Large")
                return
            if msg.method == "INVITE" and self.node_full():
                self.counters["busy"] += 1
                if self._first_in_a_while("node-full"):
                    log.warning("SIP front: INVITE %s from %s refused with 486: the node holds its most calls "
                                "(voice.max_calls; %d refused so far)", cid, source, self.counters["busy"])
                self._reply(msg, addr, 486, "Busy Here")
                return
            slot = self.pick() if msg.method == "INVITE" else self._any()
            if slot is None or slot.address is None:
                self.counters["busy"] += 1
                if self._first_in_a_while("busy"):
                    log.warning("SIP front: %s %s from %s refused: every SIP worker is full or down (%d so far)",
                                msg.method, cid, source, self.counters["busy"])
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

    def _rate_allows(self, msg: SipMessage, addr: tuple[str, int], source: str) -> bool:
        """A new call within the source's and the node's call rates (see the module docstring)."""
        if self._source_rate is not None and not self.rate_exempt(source) and not self._source_rate.take(addr[0]):
            self.counters["flood_dropped"] += 1
            if self._first_in_a_while(addr[0]):
                log.warning("SIP front: %s starts calls too fast (over sip.source_calls_per_second); its "
                            "INVITEs are dropped (%d so far)", addr[0], self.counters["flood_dropped"])
            return False
        if self._node_rate is not None and not self._node_rate.take("node"):
            self.counters["rate_refused"] += 1
            if self._first_in_a_while("node"):
                log.warning("SIP front: INVITE %s from %s refused with 503: over sip.max_new_calls_per_second "
                            "(%d refused so far)", msg.call_id, source, self.counters["rate_refused"])
            self._reply(msg, addr, 503, "Service Unavailable", (("Retry-After", "1"),))
            return False
        return True

    def _first_in_a_while(self, key: str) -> bool:
        """True once per ``FLOOD_LOG_S`` for ``key``: a flood is logged, not echoed line by line."""
        now = self.clock()
        if now - self._flood_logged.get(key, -FLOOD_LOG_S) < FLOOD_LOG_S:
            return False
        if len(self._flood_logged) > 1000:
            self._flood_logged.clear()
        self._flood_logged[key] = now
        return True

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
                self.workers[route[0]].answered.discard(msg.call_id)
                self.failed[msg.call_id] = (route[0], time.monotonic())
        elif msg.cseq_method == "INVITE":
            route = self.routes.get(msg.call_id)
            slot = self.workers.get(route[0]) if route is not None else None
            if slot is not None and msg.call_id in slot.pending:
                slot.answered.add(msg.call_id)
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
