"""Calls for the topology tests, placed by SIPp through the edge (or straight at a node).

A caller's *timeline* is one audio file (8 kHz mu-law, what SIPp streams as RTP from the answer
on) with synthesized sentences at given offsets, and DTMF keys (SIP INFO, as a PBX relays them)
at given times. The scenario follows the route set of the 200 (record-routed by Kamailio) for
every in-dialog request, and hangs up at the end, unless the test ends the call itself.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gateway.voice.audio import ulaw_encode
from tests.scale.topology import free_port

RATE = 8000
SCENARIOS = Path(__file__).resolve().parents[1] / "sip" / "scenarios"


def caller_audio(path: Path, said: list[tuple[float, str]], seconds: float) -> Path:
    """``seconds`` of caller audio with each (offset, sentence) of ``said`` spoken there."""
    from tests.voice.speech_corpus import utterance

    pcm = np.zeros(int(seconds * RATE), dtype="<i2")
    for at, text in said:
        clip = np.frombuffer(utterance(text, lead_s=0.1, trail_s=0.1).pcm, dtype="<i2")
        start = int(at * RATE)
        pcm[start:start + len(clip)] = clip[: max(0, len(pcm) - start)]
    path.write_bytes(ulaw_encode(pcm.tobytes()))
    return path


_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "{caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=ptime:20
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "{caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec rtp_stream="{audio},1,0"/></action></nop>
"""

_IN_DIALOG = """  <send retrans="500">
    <![CDATA[
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "{caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Max-Forwards: 70
{extra}      Content-Length: [len]

{body}
    ]]>
  </send>
  <recv response="200"/>
"""


@dataclass
class Caller:
    """One SIPp call: who calls, what they say and key, when it ends."""

    call_id: str
    """Prefix of the SIP Call-ID (SIPp adds its numbers): the nodes' logs name the call by it."""
    caller: str
    audio: Path
    seconds: float
    keys: list[tuple[float, str]] = field(default_factory=list)
    """(time after the answer, digits): each digit a SIP INFO, 250 ms apart."""

    def scenario(self) -> str:
        fmt = {"caller": self.caller, "call_id": self.call_id}
        parts = [_HEAD.format(name=self.call_id, audio=self.audio.name, **fmt)]
        now_ms, cseq = 0, 2
        for at, digits in sorted(self.keys):
            for i, digit in enumerate(digits):
                due = int(at * 1000) + 250 * i
                if due > now_ms:
                    parts.append(f'  <pause milliseconds="{due - now_ms}"/>\n')
                    now_ms = due
                body = f"      Signal={digit}\n      Duration=160"
                parts.append(_IN_DIALOG.format(method="INFO", cseq=cseq, body=body,
                                               extra="      Content-Type: application/dtmf-relay\n", **fmt))
                cseq += 1
        end = int(self.seconds * 1000)
        if end > now_ms:
            parts.append(f'  <pause milliseconds="{end - now_ms}"/>\n')
        parts.append(_IN_DIALOG.format(method="BYE", cseq=cseq, body="", extra="", **fmt))
        parts.append("</scenario>\n")
        return "".join(parts)


def sipp_path() -> str:
    binary = shutil.which("sipp")
    if binary is None:
        pytest.fail("sipp is not installed (Debian package sip-tester, in the Makefile's TEST_APT)")
    return binary


def place(call: Caller, target: str, workdir: Path) -> subprocess.Popen[str]:
    """Start SIPp for ``call`` towards ``target`` (host:port) in the background."""
    xml = workdir / f"{call.call_id}.xml"
    xml.write_text(call.scenario())
    if call.audio.parent != workdir:
        shutil.copy(call.audio, workdir / call.audio.name)
    cmd = [sipp_path(), "-sf", str(xml), "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port(pair=True)),
           "-m", "1", "-nostdin", "-timeout", f"{int(call.seconds + 60)}s", "-timeout_error",
           "-cid_str", f"{call.call_id}-%u-%p@%s",
           "-trace_err", "-error_file", str(workdir / f"{call.call_id}.err.log"),
           "-trace_msg", "-message_file", str(workdir / f"{call.call_id}.msg.log"), "-s", "bot", target]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def short_call(workdir: Path, target: str, name: str, *, seconds: float = 2.0, caller: str = "sipp",
               extra: list[str] | None = None, loops: int = -1) -> subprocess.Popen[str]:
    """The stock edge scenario (``uac_call_via_edge.xml``): a 2 s tone (``loops`` times, -1: for
    ever) for ``seconds``, then BYE."""
    from tests.sip.conftest import write_ulaw_tone

    if not (workdir / "caller.ulaw").exists():
        write_ulaw_tone(workdir / "caller.ulaw", 2.0)
    xml = workdir / f"{name}.xml"
    xml.write_text((SCENARIOS / "uac_call_via_edge.xml").read_text().replace("CALLER", caller)
                   .replace("CALL_MS", str(int(seconds * 1000))).replace("caller.ulaw,-1,0", f"caller.ulaw,{loops},0"))
    cmd = [sipp_path(), "-sf", str(xml), "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port(pair=True)),
           "-m", "1", "-nostdin", "-timeout", f"{int(seconds + 30)}s", "-timeout_error", "-trace_err",
           "-cid_str", f"{name}-%u-%p@%s",
           "-error_file", str(workdir / f"{name}.err.log"), "-trace_msg",
           "-message_file", str(workdir / f"{name}.msg.log"), "-s", "bot", *(extra or []), target]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def sipp_log(workdir: Path, name: str) -> str:
    out = []
    for suffix in (".err.log", ".msg.log"):
        p = workdir / f"{name}{suffix}"
        if p.exists():
            out.append(p.read_text(errors="replace")[-5000:])
    return "\n".join(out)
