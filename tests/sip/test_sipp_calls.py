"""The gateway's SIP user agent against SIPp (real SIP over UDP on loopback).

The gateway runs in its own process with a fake voice pipeline that plays a tone and counts the
caller's voiced frames (see ``fakes.py``); each test checks both the SIP outcome (SIPp's exit
status: the scenario's every expected message arrived) and what the voice side saw. Every test
runs twice: the SIP endpoint in the gateway process, and two SIP workers behind the SIP front.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.sip.conftest import run_sipp, sipp_log, write_ulaw_tone

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return write_ulaw_tone(tmp_path / "caller.ulaw", 2.0)


def _ok(result, tmp_path: Path, scenario: str) -> None:
    assert result.returncode == 0, f"sipp {scenario} failed ({result.returncode}):\n{result.stdout[-2000:]}\n" \
                                   f"{sipp_log(tmp_path, scenario)}"


def test_normal_call_with_rtp_and_bye_from_caller(start_any_gateway, tmp_path, media) -> None:
    gw = start_any_gateway(mode="tone")
    result = run_sipp("uac_call.xml", f"127.0.0.1:{gw.port}", tmp_path)
    _ok(result, tmp_path, "uac_call.xml")
    started = gw.expect("session_started")
    assert started["rate"] == 8000 and started["caller_id"] == "sipp" and started["dialed"] == "bot"
    stopped = gw.expect("session_stopped")
    assert stopped["reason"] == "hangup"
    assert stopped["voiced_in"] >= 50, stopped  # 2 s of tone streamed by SIPp reached the session
    assert stopped["pulled"] >= 50


def test_cancel_before_answer(start_any_gateway, tmp_path, media) -> None:
    gw = start_any_gateway(mode="tone", sip={"answer_delay_ms": 3000})
    result = run_sipp("uac_cancel.xml", f"127.0.0.1:{gw.port}", tmp_path)
    _ok(result, tmp_path, "uac_cancel.xml")
    time.sleep(3.5)  # past the answer delay: the cancelled call must not be answered
    assert gw.all_events("session_started") == []
    assert gw.alive() and gw.stats()["calls"] == 0


def test_bye_from_gateway_when_session_ends(start_any_gateway, tmp_path, media) -> None:
    gw = start_any_gateway(mode="tone", end_after=1.5)
    result = run_sipp("uac_wait_bye.xml", f"127.0.0.1:{gw.port}", tmp_path)
    _ok(result, tmp_path, "uac_wait_bye.xml")
    stopped = gw.expect("session_stopped")
    assert stopped["reason"] == "completed"


def test_reinvite_keeps_the_call(start_any_gateway, tmp_path, media) -> None:
    gw = start_any_gateway(mode="tone")
    result = run_sipp("uac_reinvite.xml", f"127.0.0.1:{gw.port}", tmp_path)
    _ok(result, tmp_path, "uac_reinvite.xml")
    assert gw.expect("session_started")["conversation_id"] == "conv-from-pbx"
    assert gw.expect("session_stopped")["voiced_in"] >= 50
    assert gw.all_events("session_started") == []  # the re-INVITEs did not start another session


def test_no_common_codec_gets_488(start_any_gateway, tmp_path, media) -> None:
    gw = start_any_gateway(mode="tone")
    result = run_sipp("uac_no_codec.xml", f"127.0.0.1:{gw.port}", tmp_path)
    _ok(result, tmp_path, "uac_no_codec.xml")
    assert gw.all_events("session_started") == []


def test_unknown_peer_gets_403_in_trunk_mode(start_any_gateway, tmp_path, media) -> None:
    gw = start_any_gateway(mode="tone", sip={"mode": "trunk", "peers": ["192.0.2.77"]})
    result = run_sipp("uac_rejected.xml", f"127.0.0.1:{gw.port}", tmp_path, subst={"EXPECTED_STATUS": "403"})
    _ok(result, tmp_path, "uac_rejected.xml")
    assert gw.stats()["rejected"] == 1


def test_dtmf_by_sip_info_and_blind_transfer(start_any_gateway, tmp_path, media) -> None:
    gw = start_any_gateway(mode="tone", sip={"transfer_uri": "sip:agents@127.0.0.1:5999"})
    result = run_sipp("uac_dtmf_info_refer.xml", f"127.0.0.1:{gw.port}", tmp_path)
    _ok(result, tmp_path, "uac_dtmf_info_refer.xml")
    assert gw.expect("dtmf")["digit"] == "5"
    assert gw.expect("dtmf")["digit"] == "9"
    assert gw.expect("transfer")["ok"] is True
    stopped = gw.expect("session_stopped")
    assert stopped["digits"] == "59"
    conv = gw.expect("session_started")["conversation_id"]
    logged = (tmp_path / "uac_dtmf_info_refer.xml.log").read_text()
    assert f"value {conv}" in logged  # the REFER carried this call's conversation id


def test_malformed_messages_leave_the_gateway_up(start_any_gateway, tmp_path, media) -> None:
    gw = start_any_gateway(mode="tone", sip={"transports": ["udp", "tcp"]})
    garbage = [
        b"\x00\xff\xfe garbage \x01" * 10,
        b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: nonsense\r\n\r\n",
        b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:bot@127.0.0.1>\r\nCall-ID: x\r\nCSeq: banana INVITE\r\n"
        b"Content-Length: 99999\r\n\r\nv=0",
        b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n",
        b"OPTIONS sip:bot@127.0.0.1 SIP/2.0\r\n" + b"X-Long: " + b"a" * 60000 + b"\r\n\r\n",
        b"BYE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=2\r\n"
        b"To: <sip:bot@127.0.0.1>;tag=unknown\r\nCall-ID: nosuchcall\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for datagram in garbage:
            s.sendto(datagram, ("127.0.0.1", gw.port))
    tcp_port = gw.stats()["workers"][0]["port"] if start_any_gateway.workers else gw.port  # the front is UDP
    for chunk in (b"\x16\x03\x01 not sip at all\r\n\r\n", b"INVITE x\r\nContent-Length: -5\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as t:
            t.sendall(chunk)
    time.sleep(0.5)
    assert gw.alive()
    result = run_sipp("uac_call.xml", f"127.0.0.1:{gw.port}", tmp_path)
    _ok(result, tmp_path, "uac_call.xml")
    assert gw.expect("session_stopped")["voiced_in"] >= 50


def test_outbound_call_carries_the_conversation(start_any_gateway, tmp_path, media) -> None:
    from tests.sip.conftest import free_port

    uas_port = free_port()
    gw = start_any_gateway(mode="tone")
    uas = run_sipp("uas_answer.xml", "", tmp_path, uas=True, port=uas_port, background=True)
    time.sleep(0.5)
    gw.send(cmd="originate", target=f"sip:customer@127.0.0.1:{uas_port}", conversation_id="conv-42",
            callback="nonce-42")
    out, _ = uas.communicate(timeout=60)
    assert uas.returncode == 0, f"{out[-2000:]}\n{sipp_log(tmp_path, 'uas_answer.xml')}"
    started = gw.expect("session_started")
    assert started["outbound"] is True and started["conversation_id"] == "conv-42"
    assert started["callback"] == "nonce-42"  # the core's nonce comes back with the answered call
    stopped = gw.expect("session_stopped")
    assert stopped["voiced_in"] >= 25
    assert "value conv-42" in (tmp_path / "uas_answer.xml.log").read_text()
