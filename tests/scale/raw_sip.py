"""A bare UDP SIP peer for the abuse tests: it sends exactly the bytes a test writes (malformed,
racing, out of any dialog) and reads back parsed answers. No retransmissions, no state machine:
what a careless or hostile peer does."""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass

from gateway.telephony.sip.message import SipMessage, SipParseError, parse

SDP = ("v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@dataclass
class Dialog:
    """What a caller needs to go on in a dialog: the remote tag, its Contact, the route set."""

    to_tag: str
    contact: str
    routes: list[str]


class RawPeer:
    """A UDP socket on ``host`` (any loopback address) speaking SIP by hand."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((host, 0))

    def close(self) -> None:
        self.sock.close()
        self.rtp.close()

    def send(self, data: bytes, target: tuple[str, int]) -> None:
        self.sock.sendto(data, target)

    def answers(self, seconds: float, until: int = 0) -> list[SipMessage]:
        """Every SIP response (and request) received in ``seconds`` (``until``: stop after that many)."""
        out: list[SipMessage] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and len(out) >= until):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except OSError:
                break
            try:
                out.append(parse(data))
            except SipParseError:
                continue
        return out

    def via(self, branch: str) -> str:
        return f"SIP/2.0/UDP {self.host}:{self.port};rport;branch=z9hG4bK{branch}"

    def request(self, method: str, uri: str, *, call_id: str, branch: str, cseq: int, from_tag: str,
                to_tag: str = "", routes: list[str] | None = None, body: str = "",
                cseq_method: str = "") -> bytes:
        to = "<sip:bot@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        lines = [f"{method} {uri} SIP/2.0", f"Via: {self.via(branch)}"]
        lines += [f"Route: {r}" for r in routes or []]
        lines += [f"From: <sip:raw@{self.host}:{self.port}>;tag={from_tag}", f"To: {to}", f"Call-ID: {call_id}",
                  f"CSeq: {cseq} {cseq_method or method}", f"Contact: <sip:raw@{self.host}:{self.port}>",
                  "Max-Forwards: 70"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def invite(self, target: tuple[str, int], call_id: str = "", branch: str = "") -> tuple[bytes, str, str, str]:
        """Send an INVITE with an offer; returns (bytes sent, Call-ID, branch, From tag)."""
        call_id = call_id or f"raw-{uuid.uuid4().hex[:12]}"
        branch = branch or uuid.uuid4().hex[:12]
        tag = uuid.uuid4().hex[:8]
        data = self.request("INVITE", f"sip:bot@{target[0]}:{target[1]}", call_id=call_id, branch=branch, cseq=1,
                            from_tag=tag, body=SDP.format(port=self.rtp.getsockname()[1]))
        self.send(data, target)
        return data, call_id, branch, tag


def dialog_of(ok: SipMessage) -> Dialog:
    """The dialog a 200 to our INVITE established (its route set reversed is ours: UAC side)."""
    to = ok.get("to")
    tag = to.split("tag=", 1)[1].split(";")[0] if "tag=" in to else ""
    contact = ok.get("contact").strip()
    contact = contact[contact.find("<") + 1:contact.find(">")] if "<" in contact else contact
    routes = [r.strip() for r in ok.get_all("record-route")][::-1]
    return Dialog(tag, contact, routes)
