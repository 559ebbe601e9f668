"""Pure helpers of the SIP channel: SIP text, peer checks, routing, fast frame access."""

from __future__ import annotations

from pathlib import Path

import pjsua2 as pj
import pytest

from gateway.config import load_settings
from gateway.telephony.sip.call import header_value, uri_host, uri_user
from gateway.telephony.sip.endpoint import SipEndpoint, peer_allowed
from gateway.telephony.sip.media import FAST_FRAMES, OUT_DEPTH, FrameBuffers, read_frame, write_frame
from gateway.telephony.sip.runtime import SipError

FIXTURES = Path("/work/shared/fixtures/asterisk/sip")


def test_uri_user_and_host() -> None:
    assert uri_user('"sipp" <sip:sipp@127.0.0.1:5070>;tag=1') == "sipp"
    assert uri_user("<sip:+15550199@pbx.example.com;user=phone>") == "+15550199"
    assert uri_user("sip:pbx.example.com") == "pbx.example.com"
    assert uri_host("sip:pbx.example.com:5060;transport=tcp") == "pbx.example.com:5060"
    assert uri_host("<sips:agents@10.0.0.5?X-A=1>") == "10.0.0.5"


def test_header_value_reads_a_real_asterisk_invite() -> None:
    trace = FIXTURES / "sip_call_to_audiosocket_ext300.sipp_trace_msg.log"
    if not trace.exists():
        pytest.skip("shared Asterisk fixtures are not present")
    text = trace.read_text()
    invite = text[text.index("INVITE sip:"):].replace("\n", "\r\n")
    assert header_value(invite, "call-id") == "1-452@127.0.0.1"
    assert header_value(invite, "User-Agent") == "SIPp fixture recorder"
    assert header_value(invite, "X-Conversation-ID") == ""
    assert header_value("INVITE sip:a SIP/2.0\r\nX-Conversation-ID: c-1\r\n\r\nv=0\r\nX-Conversation-ID: body", "x-conversation-id") == "c-1"


def test_peer_allowed() -> None:
    assert peer_allowed("10.0.0.1:5060", ())
    assert peer_allowed("10.0.0.1:5060", ("10.0.0.1",))
    assert peer_allowed("10.0.0.1:5060", ("10.0.0.1:5060",))
    assert not peer_allowed("10.0.0.1:5062", ("10.0.0.1:5060",))
    assert not peer_allowed("10.0.0.2:5060", ("10.0.0.1",))


def test_target_uri_routing() -> None:
    def ep(**sip) -> SipEndpoint:
        return SipEndpoint(load_settings(overrides={"sip": sip}).sip, pipeline=None)

    assert ep().target_uri("sip:a@b") == "sip:a@b"
    assert ep().target_uri("2001@pbx") == "sip:2001@pbx"
    assert ep(outbound_uri="sip:{number}@trunk.example.com").target_uri("+155501") == "sip:+155501@trunk.example.com"
    assert ep(mode="register", registrar="sip:pbx.example.com:5070").target_uri("300") == "sip:300@pbx.example.com:5070"
    assert ep(peers=["10.1.1.1"]).target_uri("300") == "sip:300@10.1.1.1"
    with pytest.raises(SipError):
        ep().target_uri("300")


def test_frame_copy_round_trip() -> None:
    assert FAST_FRAMES  # the data-pointer path works with this wheel
    frame = pj.MediaFrame()
    pcm = bytes(range(256)) * 2 + bytes(128)
    write_frame(frame, pcm)
    assert frame.size == 640 and frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO
    assert read_frame(frame) == pcm == bytes(frame.buf)


def test_outgoing_queue_depth_grows_after_underruns() -> None:
    buffers = FrameBuffers("c1", 8000)
    buffers.top_up(lambda: b"\x01" * 320)
    assert len(buffers.outgoing) == OUT_DEPTH == 2  # 40 ms of bot audio ahead of pjmedia's clock
    buffers.underruns = 10
    buffers.top_up(lambda: b"\x01" * 320)
    assert len(buffers.outgoing) == OUT_DEPTH + 2


def test_doctor_weighs_sip_max_calls_against_the_workers() -> None:
    from gateway.config import load_settings
    from gateway.doctor import _sip_capacity
    from gateway.telephony.sip.runtime import CALLS_PER_PROCESS

    short = _sip_capacity(load_settings(overrides={"sip": {"enabled": True, "max_calls": 12}}))
    assert not short.ok and "sip.workers to 3" in short.fix and f"hold {CALLS_PER_PROCESS} calls" in short.detail
    enough = _sip_capacity(load_settings(overrides={"sip": {"enabled": True, "max_calls": 12, "workers": 3}}))
    assert enough.ok and "12 simultaneous calls (3 SIP workers)" in enough.detail


def test_voicegw_call_names_a_missing_caller_recording(tmp_path, capsys):
    from gateway.cli import main

    missing = tmp_path / "nope.wav"
    assert main(["call", "sip:bot@127.0.0.1:5999", "--play", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "cannot read" in err and "Traceback" not in err


def test_a_sip_worker_reads_its_settings_without_pydantic() -> None:
    """A SIP worker gets the gateway's validated ``sip`` settings as JSON and does not load
    pydantic or the settings models (14 MB of each worker process)."""
    import subprocess
    import sys

    from gateway.telephony.sip.worker import worker_settings

    settings = load_settings(overrides={"sip": {"peers": ["10.0.0.1"], "transports": ["udp", "tcp"]}}).sip
    plain = worker_settings(settings.model_dump(mode="json"))
    assert plain.peers == ("10.0.0.1",) and plain.transports == ("udp", "tcp")
    assert vars(plain) == settings.model_dump()
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, gateway.telephony.sip.worker, gateway.telephony.sip.endpoint; "
                               "print(sorted(m for m in ('pydantic', 'gateway.config', 'redis') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
