"""The SIP front: its sans-IO helpers, then the proxy over real UDP sockets on loopback.

The workers and the PBX are plain asyncio UDP sockets that speak just enough SIP to answer;
no pjsua2 is involved. "Nothing arrived" is never checked by waiting: a later datagram that must
arrive first proves that an earlier one was dropped (the front handles datagrams in order).
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import pytest

from gateway.telephony.sip.front import (
    ACK_WAIT_S,
    BRANCH_PREFIX,
    MAX_DATAGRAM,
    MAX_HEADERS,
    ROUTE_TTL_S,
    SipFront,
    SipMessage,
    SipParseError,
    front_branch,
    parse,
    reply,
    response_target,
    stamp_received,
    via_params,
)

pytestmark = [pytest.mark.sip, pytest.mark.timeout(60)]

WAIT_S = 2.0
MAGIC = "z9hG4bK"


def request(method: str, call_id: str, via: str, *, cseq: int = 1, to_tag: str = "",
            max_forwards: int | None = 70, compact: bool = False) -> bytes:
    """A request as a PBX sends it (``via`` is its whole top Via value)."""
    to = "<sip:300@gateway.example>" + (f";tag={to_tag}" if to_tag else "")
    names = ("v", "f", "t", "i") if compact else ("Via", "From", "To", "Call-ID")
    lines = [f"{method} sip:300@gateway.example SIP/2.0",
             f"{names[0]}: {via}",
             f"{names[1]}: \"PBX\" <sip:pbx@pbx.example>;tag=pbx-{call_id}",
             f"{names[2]}: {to}",
             f"{names[3]}: {call_id}",
             f"CSeq: {cseq} {method}"]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += ["Contact: <sip:pbx@127.0.0.1>", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response_to(req: SipMessage, status: int, reason: str, to_tag: str = "wrk") -> SipMessage:
    """A worker's response: every Via of the request in order, its From/To/Call-ID/CSeq."""
    headers: list[tuple[str, str]] = []
    for key, value in req.headers:
        name = key.lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            headers.append((key, value))
        elif name in ("to", "t"):
            headers.append((key, value if ";tag=" in value else f"{value};tag={to_tag}"))
    headers += [("Contact", "<sip:300@127.0.0.1:1>"), ("Content-Length", "0")]
    return SipMessage(start=f"SIP/2.0 {status} {reason}", headers=headers, status=status)


# ---- sans-IO helpers ----------------------------------------------------------------------------
def test_parse_a_request() -> None:
    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a1;rport"
    msg = parse(request("INVITE", "call-1@pbx", via, cseq=7) + b"v=0\r\n")
    assert msg.method == "INVITE" and msg.status == 0
    assert msg.start == "INVITE sip:300@gateway.example SIP/2.0"
    assert msg.call_id == "call-1@pbx"
    assert msg.get("via") == via and msg.get_all("via") == [via]
    assert msg.cseq_method == "INVITE" and msg.get("cseq") == "7 INVITE"
    assert msg.get("max-forwards") == "70"
    assert not msg.to_tag
    assert msg.body == b"v=0\r\n"
    assert msg.get("x-absent") == ""


def test_parse_a_response_and_round_trip() -> None:
    raw = (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bK1, SIP/2.0/UDP b:2;branch=z9hG4bK2\r\n"
           b"To: <sip:x@y>;tag=abc\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    msg = parse(raw)
    assert msg.status == 180 and msg.method == ""
    assert msg.get_all("via") == ["SIP/2.0/UDP a:1;branch=z9hG4bK1", "SIP/2.0/UDP b:2;branch=z9hG4bK2"]
    assert msg.to_tag
    assert msg.encode() == raw
    assert parse(msg.encode()).headers == msg.headers


def test_parse_compact_headers_and_folded_lines() -> None:
    raw = (b"OPTIONS sip:gw SIP/2.0\r\n"
           b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-c\r\n"
           b"i: compact-1\r\n"
           b"t: <sip:gw>\r\n"
           b"Subject: first part\r\n"
           b"\tsecond part\r\n"
           b"CSeq: 2\r\n  OPTIONS\r\n"
           b"l: 0\r\n\r\n")
    msg = parse(raw)
    assert msg.call_id == "compact-1"
    assert msg.get("via") == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-c"
    assert msg.get("subject") == "first part second part"
    assert msg.cseq_method == "OPTIONS"
    assert msg.get("content-length") == "0"
    assert ("i", "compact-1") in msg.headers  # original names are kept


def test_parse_comma_split_respects_quotes_and_brackets() -> None:
    raw = (b'NOTIFY sip:gw SIP/2.0\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bK1\r\n'
           b'Call-ID: q\r\nCSeq: 1 NOTIFY\r\n'
           b'Contact: "Doe, John" <sip:j@h;x=a,b>, <sip:k@h>\r\n\r\n')
    assert parse(raw).get_all("contact") == ['"Doe, John" <sip:j@h;x=a,b>', "<sip:k@h>"]


@pytest.mark.parametrize(("data", "why"), [
    (b"hello world", "no end of headers"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "headers are not UTF-8"),
    (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nCall-ID: \xff\xfe\r\nCSeq: 1 INVITE\r\n\r\n",
     "headers are not UTF-8"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad request line"),
    (b"SIP/2.0 OK\r\nVia: x\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n", "bad status line"),
    (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nno colon here\r\n\r\n", "bad header line"),
    (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nCSeq: 1 INVITE\r\n\r\n", "missing Call-ID"),
    (b"INVITE sip:x SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n", "missing Call-ID, Via"),
    (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nCall-ID: c\r\n\r\n", "Via or CSeq"),
    (b"\r\n\r\n", "bad request line"),
])
def test_parse_rejects_what_is_not_sip(data: bytes, why: str) -> None:
    with pytest.raises(SipParseError, match=why):
        parse(data)


def test_parse_bounds_size_and_header_count() -> None:
    ok = request("OPTIONS", "big", "SIP/2.0/UDP a:1;branch=z9hG4bK1")
    with pytest.raises(SipParseError, match="too large"):
        parse(ok + b"x" * (MAX_DATAGRAM + 1 - len(ok)))
    assert parse(ok + b"x" * (MAX_DATAGRAM - len(ok))).call_id == "big"  # exactly the limit parses
    head, _, _ = ok.partition(b"\r\n\r\n")
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS))
    with pytest.raises(SipParseError, match="too many headers"):
        parse(head + b"\r\n" + extra + b"\r\n")


def test_via_params() -> None:
    assert via_params("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;rport") == \
        ("UDP", "10.0.0.1", 5070, {"branch": "z9hG4bK-1", "rport": ""})
    assert via_params("SIP/2.0/tcp pbx.example ; branch = z9hG4bK2 ;received=1.2.3.4") == \
        ("TCP", "pbx.example", 0, {"branch": "z9hG4bK2", "received": "1.2.3.4"})
    assert via_params("SIP/2.0/UDP [2001:db8::1]:5062;BRANCH=z9hG4bK3") == \
        ("UDP", "2001:db8::1", 5062, {"branch": "z9hG4bK3"})
    assert via_params("SIP/2.0/UDP [2001:db8::1];rport=9") == ("UDP", "2001:db8::1", 0, {"rport": "9"})


def test_stamp_received_follows_rfc_3581() -> None:
    # rport asked for: filled with the source port, received added even when the host matches
    stamped = stamp_received("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport", ("10.0.0.1", 40000))
    _, host, port, kv = via_params(stamped)
    assert (host, port) == ("10.0.0.1", 5060)
    assert kv == {"branch": "z9hG4bK-1", "rport": "40000", "received": "10.0.0.1"}
    assert stamped.startswith("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;")
    # host differs (a NAT): received added, no rport invented
    stamped = stamp_received("SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-2", ("203.0.113.9", 5060))
    assert via_params(stamped)[3] == {"branch": "z9hG4bK-2", "received": "203.0.113.9"}
    # neither: the Via is left as it was
    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-3"
    assert stamp_received(via, ("10.0.0.1", 5060)) == via
    # stale received/rport values from the sender are replaced, not duplicated
    stamped = stamp_received("SIP/2.0/UDP 10.0.0.1;received=9.9.9.9;rport=1;branch=z9hG4bK-4",
                             ("10.0.0.2", 7000))
    assert stamped.count("received=") == 1 and stamped.count("rport=") == 1
    assert via_params(stamped)[3] == {"branch": "z9hG4bK-4", "rport": "7000", "received": "10.0.0.2"}


def test_response_target() -> None:
    assert response_target("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1") == ("10.0.0.1", 5070)
    assert response_target("SIP/2.0/UDP pbx.example;branch=z9hG4bK1") == ("pbx.example", 5060)
    assert response_target("SIP/2.0/UDP pbx.example;branch=z9hG4bK1", 5080) == ("pbx.example", 5080)
    assert response_target("SIP/2.0/UDP 192.168.1.5:5060;received=203.0.113.9") == ("203.0.113.9", 5060)
    assert response_target("SIP/2.0/UDP 192.168.1.5:5060;rport=40000;received=203.0.113.9") == \
        ("203.0.113.9", 40000)
    assert response_target("SIP/2.0/UDP 192.168.1.5:5060;rport") == ("192.168.1.5", 5060)  # not filled


def test_front_branch_matches_a_transaction() -> None:
    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-tx1;rport"
    invite = parse(request("INVITE", "c1", via))
    cancel = parse(request("CANCEL", "c1", via))
    ack = parse(request("ACK", "c1", via, to_tag="wrk"))
    other = parse(request("INVITE", "c1", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-tx2;rport", cseq=2))
    branch = front_branch(invite)
    assert branch.startswith(MAGIC) and branch.startswith(BRANCH_PREFIX)
    assert front_branch(cancel) == branch and front_branch(ack) == branch
    assert front_branch(other) != branch and front_branch(other).startswith(BRANCH_PREFIX)
    # an RFC 2543 peer (no magic cookie): Call-ID, CSeq number and top Via tell transactions apart
    old = "SIP/2.0/UDP 10.0.0.1:5060;branch=old-1"
    old_invite = parse(request("INVITE", "c2", old, cseq=5))
    assert front_branch(parse(request("CANCEL", "c2", old, cseq=5))) == front_branch(old_invite)
    assert front_branch(parse(request("INVITE", "c2", old, cseq=6))) != front_branch(old_invite)
    assert front_branch(old_invite).startswith(BRANCH_PREFIX)


def test_reply_copies_the_transaction_headers() -> None:
    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-r1"
    invite = parse(request("INVITE", "c-reply", via, cseq=3, compact=True))
    out = reply(invite, 486, "Busy Here", "t123")
    assert out.status == 486 and out.start == "SIP/2.0 486 Busy Here"
    again = parse(out.encode())
    assert again.get("via") == via
    assert again.call_id == "c-reply"
    assert again.get("cseq") == "3 INVITE"
    assert again.get("from") == invite.get("from")
    assert again.get("to") == "<sip:300@gateway.example>;tag=t123"
    assert again.get("content-length") == "0"
    assert again.get("contact") == "" and again.get("max-forwards") == ""
    # an existing To tag is kept, not doubled
    tagged = reply(parse(request("BYE", "c-reply", via, to_tag="abc")), 481, "Nope", "t123")
    assert tagged.get("to") == "<sip:300@gateway.example>;tag=abc"


def test_pick_honours_capacity_and_max_calls() -> None:
    front = SipFront("127.0.0.1", 0, capacity=1, max_calls=10)
    assert front.pick() is None  # no worker at all
    front.set_worker(0, ("127.0.0.1", 1))
    front.set_worker(1, ("127.0.0.1", 2))
    assert front.pick() is front.workers[0]
    front.report(0, ["a"])
    assert front.pick() is front.workers[1]
    front.report(1, ["b"])
    assert front.pick() is None  # every worker at capacity, far from max_calls
    assert front.load() == 2
    front.report(0, [])
    assert front.pick() is front.workers[0]


# ---- the front over real sockets ----------------------------------------------------------------
class Peer(asyncio.DatagramProtocol):
    """A UDP socket on loopback that keeps what it receives."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait((data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes | SipMessage, target: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data.encode() if isinstance(data, SipMessage) else data, target)

    async def recv(self) -> SipMessage:
        data, _ = await asyncio.wait_for(self.inbox.get(), WAIT_S)
        return parse(data)


async def open_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    return peer


class Rig:
    """A started front, two fake workers registered with it and a fake PBX."""

    def __init__(self, front: SipFront, workers: list[Peer], pbx: Peer) -> None:
        self.front = front
        self.workers = workers
        self.pbx = pbx
        self.front_addr = ("127.0.0.1", front.port)
        self._branch = 0

    def via(self) -> str:
        """A fresh top Via for the PBX (asks for rport, as Asterisk does)."""
        self._branch += 1
        return f"SIP/2.0/UDP 127.0.0.1:{self.pbx.addr[1]};rport;branch=z9hG4bK-pbx{self._branch}"

    def send(self, data: bytes) -> None:
        self.pbx.send(data, self.front_addr)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    allowed = {"ok": True}
    front = SipFront("127.0.0.1", 0, capacity=2, max_calls=3, peer_allowed=lambda source: allowed["ok"])
    await front.start()
    assert front.port != 0
    workers = [await open_peer(), await open_peer()]
    pbx = await open_peer()
    for i, worker in enumerate(workers):
        front.set_worker(i, worker.addr)
    try:
        yield Rig(front, workers, pbx)
    finally:
        front.close()
        for peer in [*workers, pbx]:
            assert peer.transport is not None
            peer.transport.close()


def front_via_of(msg: SipMessage) -> str:
    return msg.get_all("via")[0]


async def test_invite_reaches_a_worker_and_its_responses_reach_the_pbx(rig: Rig) -> None:
    pbx_via = rig.via()
    rig.send(request("INVITE", "call-a", pbx_via))
    got = await rig.workers[0].recv()
    assert got.method == "INVITE" and got.call_id == "call-a"
    vias = got.get_all("via")
    assert len(vias) == 2
    _, host, port, kv = via_params(vias[0])
    assert (host, port) == rig.front_addr and rig.front.address == f"127.0.0.1:{rig.front.port}"
    assert kv["branch"].startswith(BRANCH_PREFIX)
    assert kv["branch"] == front_branch(parse(request("INVITE", "call-a", pbx_via)))
    assert got.get("max-forwards") == "69"
    assert via_params(vias[1])[3] == {"branch": "z9hG4bK-pbx1", "rport": str(rig.pbx.addr[1]),
                                      "received": "127.0.0.1"}
    assert rig.front.routes["call-a"][0] == 0
    assert rig.front.counters["forwarded"] == 1

    for status, reason in ((180, "Ringing"), (200, "OK")):
        resp = response_to(got, status, reason)
        rig.workers[0].send(resp, response_target(front_via_of(resp)))
        at_pbx = await rig.pbx.recv()
        assert at_pbx.status == status and at_pbx.start == f"SIP/2.0 {status} {reason}"
        assert at_pbx.headers == resp.headers[1:]  # only the front's Via is gone
        assert at_pbx.get_all("via") == [vias[1]]
    assert rig.front.counters["responses"] == 2
    assert rig.front.routes["call-a"][0] == 0  # a 2xx keeps the route (the dialog lives on the worker)


async def test_a_combined_via_header_and_compact_names_are_handled(rig: Rig) -> None:
    pbx_via = rig.via()
    rig.send(request("INVITE", "call-compact", pbx_via + ", SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-up",
                     compact=True))
    got = await rig.workers[0].recv()
    assert got.call_id == "call-compact"
    vias = got.get_all("via")
    assert len(vias) == 3 and via_params(vias[0])[3]["branch"].startswith(BRANCH_PREFIX)
    assert "received=127.0.0.1" in vias[1] and vias[2] == "SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-up"
    # the worker answers with every Via in one header
    resp = SipMessage(start="SIP/2.0 100 Trying", status=100,
                      headers=[("v", ", ".join(vias)), ("i", "call-compact"), ("CSeq", "1 INVITE"),
                               ("Content-Length", "0")])
    rig.workers[0].send(resp, rig.front_addr)
    at_pbx = await rig.pbx.recv()
    assert at_pbx.status == 100 and at_pbx.get_all("via") == vias[1:]


async def test_cancel_follows_its_invite_and_a_final_failure_drops_the_route(rig: Rig) -> None:
    pbx_via = rig.via()
    rig.send(request("INVITE", "call-c", pbx_via))
    invite = await rig.workers[0].recv()
    rig.send(request("CANCEL", "call-c", pbx_via))
    cancel = await rig.workers[0].recv()
    assert cancel.method == "CANCEL" and cancel.call_id == "call-c"
    assert front_via_of(cancel) == front_via_of(invite)  # same front branch: the worker matches it
    assert cancel.get_all("via")[1] == invite.get_all("via")[1]

    ok = response_to(cancel, 200, "OK")
    rig.workers[0].send(ok, rig.front_addr)
    assert (await rig.pbx.recv()).cseq_method == "CANCEL"
    assert "call-c" in rig.front.routes  # a CANCEL's 200 is not the INVITE's final response

    terminated = response_to(invite, 487, "Request Terminated")
    rig.workers[0].send(terminated, rig.front_addr)
    at_pbx = await rig.pbx.recv()
    assert at_pbx.status == 487 and at_pbx.get_all("via") == invite.get_all("via")[1:]
    assert "call-c" not in rig.front.routes
    assert rig.front.workers[0].load(0.0) == 0

    rig.send(request("CANCEL", "call-c", pbx_via))
    gone = await rig.pbx.recv()
    assert gone.status == 481 and gone.cseq_method == "CANCEL" and gone.call_id == "call-c"
    assert rig.front.counters["unroutable"] == 1


async def test_the_ack_of_a_worker_failure_reaches_that_worker(rig: Rig) -> None:
    """RFC 3261 17.2.1: a non-2xx final response is acknowledged hop by hop, or the worker resends it."""
    pbx_via = rig.via()
    rig.send(request("INVITE", "call-ack", pbx_via))
    invite = await rig.workers[0].recv()
    rig.workers[0].send(response_to(invite, 486, "Busy Here", "wrk-ack"), rig.front_addr)
    assert (await rig.pbx.recv()).status == 486
    rig.send(request("ACK", "call-ack", pbx_via, to_tag="wrk-ack"))
    ack = await rig.workers[0].recv()
    assert ack.method == "ACK" and ack.call_id == "call-ack"
    assert front_via_of(ack) == front_via_of(invite)
    # the failed call does not count against the worker, and a CANCEL now finds no transaction
    assert rig.front.workers[0].load(0.0) == 0
    rig.send(request("CANCEL", "call-ack", pbx_via))
    assert (await rig.pbx.recv()).status == 481


async def test_new_invites_are_spread_and_a_full_gateway_answers_486(rig: Rig) -> None:
    front = rig.front
    rig.send(request("INVITE", "call-1", rig.via()))
    assert (await rig.workers[0].recv()).call_id == "call-1"  # both idle: the lower index
    front.report(0, ["call-1", "older-call"])  # worker 0 now at capacity (2)

    rig.send(request("INVITE", "call-2", rig.via()))
    assert (await rig.workers[1].recv()).call_id == "call-2"
    assert front.load() == 3  # == max_calls (call-2 counts while pending)

    busy_via = rig.via()
    rig.send(request("INVITE", "call-3", busy_via))
    busy = await rig.pbx.recv()
    assert busy.status == 486 and busy.start == "SIP/2.0 486 Busy Here"
    assert busy.call_id == "call-3" and busy.get("cseq") == "1 INVITE"
    assert busy.to_tag
    assert via_params(busy.get("via"))[3]["branch"] == "z9hG4bK-pbx3"
    assert "call-3" not in front.routes and front.counters["busy"] == 1
    rig.send(request("ACK", "call-3", busy_via, to_tag="x"))  # absorbed by the front

    front.report(0, ["call-1"])  # a call ended on worker 0: loads are now 1 and 1
    rig.send(request("INVITE", "call-4", rig.via()))
    first = await rig.workers[0].recv()
    assert first.method == "INVITE" and first.call_id == "call-4"  # not the ACK of the 486
    assert rig.workers[1].inbox.empty()
    assert rig.pbx.inbox.empty()  # the ACK got no answer either
    assert front.routes["call-4"][0] == 0 and front.load() == 3

    # max_calls reached while worker 1 still has room: busy again
    rig.send(request("INVITE", "call-5", rig.via()))
    assert (await rig.pbx.recv()).status == 486
    assert front.counters["busy"] == 2 and front.counters["forwarded"] == 3


async def test_a_report_drops_the_routes_of_ended_calls(rig: Rig) -> None:
    via = rig.via()
    rig.send(request("INVITE", "call-r", via))
    await rig.workers[0].recv()
    rig.front.report(0, ["call-r"])
    assert "call-r" in rig.front.routes
    rig.front.report(0, [])
    assert "call-r" not in rig.front.routes
    rig.send(request("BYE", "call-r", rig.via(), cseq=2, to_tag="wrk"))
    gone = await rig.pbx.recv()
    assert gone.status == 481 and gone.cseq_method == "BYE"


async def test_a_refused_peer_gets_403_and_reaches_no_worker(rig: Rig) -> None:
    seen: list[str] = []
    rig.front.peer_allowed = lambda source: seen.append(source) or False
    rig.send(request("INVITE", "call-x", rig.via()))
    refused = await rig.pbx.recv()
    assert refused.status == 403 and refused.start == "SIP/2.0 403 Forbidden" and refused.to_tag
    assert seen == [f"127.0.0.1:{rig.pbx.addr[1]}"]
    assert rig.front.counters["forbidden"] == 1 and "call-x" not in rig.front.routes

    rig.front.peer_allowed = lambda source: True
    rig.send(request("INVITE", "call-y", rig.via()))
    first = await rig.workers[0].recv()
    assert first.call_id == "call-y"  # the refused INVITE never arrived
    assert rig.workers[1].inbox.empty()


async def test_garbage_is_dropped_and_counted_and_the_front_keeps_working(rig: Rig) -> None:
    rig.send(b"\r\n\r\n")  # a CRLF keep-alive (RFC 5626): dropped, not an error
    rig.send(b"\r\n")
    rig.send(b"\x00\x01garbage\xff")
    rig.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rig.send(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1\r\n\r\n")
    # a response whose top Via is not the front's: nowhere to send it
    rig.workers[0].send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n"
                        b"Call-ID: stray\r\nCSeq: 1 INVITE\r\n\r\n", rig.front_addr)
    rig.send(request("INVITE", "call-after", rig.via()))
    got = await rig.workers[0].recv()
    assert got.call_id == "call-after"
    assert rig.front.counters["malformed"] == 3
    assert rig.front.counters["unroutable"] == 1
    assert rig.pbx.inbox.empty() and rig.workers[1].inbox.empty()


async def test_max_forwards_zero_gets_483(rig: Rig) -> None:
    rig.send(request("INVITE", "call-loop", rig.via(), max_forwards=0))
    hops = await rig.pbx.recv()
    assert hops.status == 483 and hops.call_id == "call-loop"
    # a refused INVITE holds no route and no place on a worker
    assert "call-loop" not in rig.front.routes and rig.front.load() == 0
    rig.send(request("INVITE", "call-no-mf", rig.via(), max_forwards=None))
    got = await rig.workers[0].recv()
    assert got.call_id == "call-no-mf" and got.get("max-forwards") == ""


async def test_a_gone_worker_loses_its_routes_and_its_new_calls(rig: Rig) -> None:
    front = rig.front
    via_a = rig.via()
    rig.send(request("INVITE", "call-w0", via_a))
    assert (await rig.workers[0].recv()).call_id == "call-w0"
    front.report(0, ["call-w0"])

    front.set_worker(0, None)
    assert "call-w0" not in front.routes and front.workers[0].load(0.0) == 0
    rig.send(request("CANCEL", "call-w0", via_a))
    assert (await rig.pbx.recv()).status == 481

    rig.send(request("INVITE", "call-w1", rig.via()))
    assert (await rig.workers[1].recv()).call_id == "call-w1"
    rig.send(request("OPTIONS", "ping-1", rig.via()))
    ping = await rig.workers[1].recv()
    assert ping.method == "OPTIONS"
    rig.workers[1].send(response_to(ping, 200, "OK"), rig.front_addr)
    assert (await rig.pbx.recv()).status == 200
    assert rig.workers[0].inbox.empty()

    front.set_worker(1, None)
    rig.send(request("OPTIONS", "ping-2", rig.via()))
    down = await rig.pbx.recv()
    assert down.status == 503 and down.start == "SIP/2.0 503 Service Unavailable"
    assert down.cseq_method == "OPTIONS" and down.call_id == "ping-2"
    rig.send(request("INVITE", "call-none", rig.via()))
    assert (await rig.pbx.recv()).status == 486
    assert rig.workers[1].inbox.empty()

    front.set_worker(0, rig.workers[0].addr)  # restarted
    rig.send(request("INVITE", "call-back", rig.via()))
    assert (await rig.workers[0].recv()).call_id == "call-back"


async def test_options_go_round_robin_over_ready_workers(rig: Rig) -> None:
    for i in range(4):
        rig.send(request("OPTIONS", f"ping-{i}", rig.via()))
    got = [await rig.workers[0].recv(), await rig.workers[0].recv(),
           await rig.workers[1].recv(), await rig.workers[1].recv()]
    assert sorted(m.call_id for m in got) == [f"ping-{i}" for i in range(4)]
    assert not rig.front.routes  # OPTIONS hold no route


async def test_old_routes_and_failed_transactions_are_swept(rig: Rig) -> None:
    front = rig.front
    front.routes["ancient"] = (0, time.monotonic() - ROUTE_TTL_S - 1)
    front.failed["acked-long-ago"] = (0, time.monotonic() - ACK_WAIT_S - 1)
    front.failed["recent"] = (0, time.monotonic())
    front._last_sweep = -1e9  # the sweep runs at most once a minute; make this datagram trigger it
    rig.send(request("OPTIONS", "ping-sweep", rig.via()))
    assert (await rig.workers[1].recv()).call_id == "ping-sweep"
    assert "ancient" not in front.routes
    assert list(front.failed) == ["recent"]


# ---- floods ---------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def flood_rig(**limits: object) -> tuple[SipFront, Peer, Peer, Peer, Clock]:
    """A front (two workers of 100 calls) with ``limits``, a worker and two callers: a PBX on
    127.0.0.1 and another source on 127.0.0.2."""
    clock = Clock()
    front = SipFront("127.0.0.1", 0, capacity=100, max_calls=200, clock=clock, **limits)  # type: ignore[arg-type]
    await front.start()
    worker = await open_peer()
    front.set_worker(0, worker.addr)
    loop = asyncio.get_running_loop()
    _, other = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.2", 0))
    return front, worker, await open_peer(), other, clock


def invite_from(peer: Peer, call_id: str) -> bytes:
    return request("INVITE", call_id, f"SIP/2.0/UDP {peer.addr[0]}:{peer.addr[1]};rport;branch=z9hG4bK-{call_id}")


async def test_a_flooding_source_is_dropped_before_any_worker_and_others_still_get_through() -> None:
    front, worker, pbx, other, clock = await flood_rig(source_calls_per_second=2.0)
    try:
        for i in range(10):  # a burst of 2 s worth (4) passes, the rest is dropped without a word
            pbx.send(invite_from(pbx, f"flood-{i}"), ("127.0.0.1", front.port))
        other.send(invite_from(other, "neighbour"), ("127.0.0.1", front.port))
        got = [(await worker.recv()).call_id for _ in range(5)]
        assert got == ["flood-0", "flood-1", "flood-2", "flood-3", "neighbour"]
        assert front.counters["flood_dropped"] == 6 and pbx.inbox.empty()
        clock.now += 1.0  # two more a second
        for i in range(10, 13):
            pbx.send(invite_from(pbx, f"flood-{i}"), ("127.0.0.1", front.port))
        other.send(invite_from(other, "neighbour-2"), ("127.0.0.1", front.port))
        got = [(await worker.recv()).call_id for _ in range(3)]
        assert got == ["flood-10", "flood-11", "neighbour-2"]
        assert front.counters["flood_dropped"] == 7
    finally:
        front.close()
        for peer in (worker, pbx, other):
            assert peer.transport is not None
            peer.transport.close()


async def test_a_listed_peer_is_not_rate_limited_per_source() -> None:
    front, worker, pbx, other, _ = await flood_rig(source_calls_per_second=1.0,
                                                   rate_exempt=lambda source: source.startswith("127.0.0.1:"))
    try:
        for i in range(8):
            pbx.send(invite_from(pbx, f"trunk-{i}"), ("127.0.0.1", front.port))
        assert [(await worker.recv()).call_id for _ in range(8)] == [f"trunk-{i}" for i in range(8)]
        assert front.counters["flood_dropped"] == 0
    finally:
        front.close()
        for peer in (worker, pbx, other):
            assert peer.transport is not None
            peer.transport.close()


async def test_new_calls_over_the_node_rate_get_503_with_retry_after() -> None:
    front, worker, pbx, other, clock = await flood_rig(new_calls_per_second=1.0)
    try:
        for i in range(3):  # a burst of 2 passes
            pbx.send(invite_from(pbx, f"call-{i}"), ("127.0.0.1", front.port))
        assert [(await worker.recv()).call_id for _ in range(2)] == ["call-0", "call-1"]
        refused = await pbx.recv()
        assert refused.status == 503 and refused.call_id == "call-2" and refused.get("retry-after") == "1"
        assert front.counters["rate_refused"] == 1 and "call-2" not in front.routes
        pbx.send(request("ACK", "call-2", f"SIP/2.0/UDP 127.0.0.1:{pbx.addr[1]};branch=z9hG4bK-call-2",
                         to_tag="x"), ("127.0.0.1", front.port))  # absorbed
        clock.now += 1.0
        other.send(invite_from(other, "later"), ("127.0.0.1", front.port))
        assert (await worker.recv()).call_id == "later"
        assert worker.inbox.empty() and pbx.inbox.empty()
    finally:
        front.close()
        for peer in (worker, pbx, other):
            assert peer.transport is not None
            peer.transport.close()


async def test_an_invite_with_an_oversized_body_gets_413_and_reaches_no_worker() -> None:
    from gateway.telephony.sip.front import MAX_INVITE_BODY

    front, worker, pbx, other, _ = await flood_rig()
    try:
        huge = invite_from(pbx, "huge").replace(b"Content-Length: 0\r\n\r\n",
                                                b"Content-Length: %d\r\n\r\n" % (MAX_INVITE_BODY + 1))
        pbx.send(huge + b"v" * (MAX_INVITE_BODY + 1), ("127.0.0.1", front.port))
        refused = await pbx.recv()
        assert refused.status == 413 and refused.call_id == "huge" and front.counters["too_large"] == 1
        pbx.send(invite_from(pbx, "normal"), ("127.0.0.1", front.port))
        assert (await worker.recv()).call_id == "normal"  # the huge one never reached it
    finally:
        front.close()
        for peer in (worker, pbx, other):
            assert peer.transport is not None
            peer.transport.close()


async def test_an_invite_no_sip_stack_would_take_gets_400_and_reaches_no_worker() -> None:
    front, worker, pbx, other, _ = await flood_rig()
    try:
        bad_cseq = invite_from(pbx, "bad-cseq").replace(b"CSeq: 1 INVITE", b"CSeq: banana INVITE")
        bad_length = invite_from(pbx, "bad-length").replace(b"Content-Length: 0", b"Content-Length: 99999")
        for data in (bad_cseq, bad_length):
            pbx.send(data, ("127.0.0.1", front.port))
            refused = await pbx.recv()
            assert refused.status == 400
        pbx.send(invite_from(pbx, "fine"), ("127.0.0.1", front.port))
        assert (await worker.recv()).call_id == "fine"
        assert front.counters["malformed"] == 2
    finally:
        front.close()
        for peer in (worker, pbx, other):
            assert peer.transport is not None
            peer.transport.close()


async def test_an_invite_its_worker_never_answers_holds_room_only_briefly(rig: Rig) -> None:
    from gateway.telephony.sip.front import PENDING_S, UNANSWERED_S

    rig.send(request("INVITE", "dropped", rig.via()))  # the worker drops it (pjsip could not parse it)
    await rig.workers[0].recv()
    rig.send(request("INVITE", "ringing", rig.via()))
    got = await rig.workers[1].recv()
    rig.workers[1].send(response_to(got, 100, "Trying"), response_target(front_via_of(got)))
    assert (await rig.pbx.recv()).status == 100
    slots, now = rig.front.workers, time.monotonic()
    assert slots[0].load(now) == 1 and slots[1].load(now) == 1
    later = now + UNANSWERED_S + 0.5
    assert slots[0].load(later) == 0  # room again: the dropped INVITE holds none
    assert slots[1].load(later) == 1  # an answered one counts until its worker reports it
    assert slots[1].load(now + PENDING_S + 0.5) == 0


async def test_a_flood_is_logged_once_a_while_not_once_an_invite(caplog: pytest.LogCaptureFixture) -> None:
    from gateway.telephony.sip.front import FLOOD_LOG_S

    front, worker, pbx, other, clock = await flood_rig(source_calls_per_second=1.0)
    front.peer_allowed = lambda source: source.startswith("127.0.0.1:")
    try:
        with caplog.at_level("WARNING", logger="gateway.telephony.sip.front"):
            for i in range(50):  # a stranger (403) and a peer over its source rate (dropped)
                other.send(invite_from(other, f"stranger-{i}"), ("127.0.0.1", front.port))
                pbx.send(invite_from(pbx, f"flood-{i}"), ("127.0.0.1", front.port))
            assert [(await other.recv()).status for _ in range(50)] == [403] * 50
            assert [(await worker.recv()).call_id for _ in range(2)] == ["flood-0", "flood-1"]
            for _ in range(50):
                await asyncio.sleep(0)
            assert front.counters["forbidden"] == 50 and front.counters["flood_dropped"] == 48
            lines = [r.getMessage() for r in caplog.records]
            assert sum("not a configured peer" in line for line in lines) == 1, lines
            assert sum("starts calls too fast" in line for line in lines) == 1, lines
            clock.now += FLOOD_LOG_S + 1  # still at it later: one more line each
            other.send(invite_from(other, "stranger-late"), ("127.0.0.1", front.port))
            assert (await other.recv()).status == 403
            assert sum("not a configured peer; 51 so far" in r.getMessage() for r in caplog.records) == 1
    finally:
        front.close()
        for peer in (worker, pbx, other):
            assert peer.transport is not None
            peer.transport.close()


async def test_a_retransmitted_invite_reaches_its_worker_without_spending_the_rates() -> None:
    front, worker, pbx, other, _ = await flood_rig(source_calls_per_second=0.5, new_calls_per_second=0.5)
    try:
        first = invite_from(pbx, "slow-answer")
        for _ in range(4):  # the caller's timer A: the same INVITE again and again
            pbx.send(first, ("127.0.0.1", front.port))
        assert [(await worker.recv()).call_id for _ in range(4)] == ["slow-answer"] * 4
        assert front.counters["flood_dropped"] == 0 and front.counters["rate_refused"] == 0
        assert pbx.inbox.empty()
    finally:
        front.close()
        for peer in (worker, pbx, other):
            assert peer.transport is not None
            peer.transport.close()


async def test_a_listed_peer_still_meets_the_node_rate() -> None:
    front, worker, pbx, other, _ = await flood_rig(source_calls_per_second=1.0, new_calls_per_second=1.0,
                                                   rate_exempt=lambda source: source.startswith("127.0.0.1:"))
    try:
        for i in range(4):  # the trunk is exempt from the per-source rate, not from the node's
            pbx.send(invite_from(pbx, f"trunk-{i}"), ("127.0.0.1", front.port))
        assert [(await worker.recv()).call_id for _ in range(2)] == ["trunk-0", "trunk-1"]
        assert [(await pbx.recv()).status for _ in range(2)] == [503, 503]
        assert front.counters["rate_refused"] == 2 and front.counters["flood_dropped"] == 0
    finally:
        front.close()
        for peer in (worker, pbx, other):
            assert peer.transport is not None
            peer.transport.close()
