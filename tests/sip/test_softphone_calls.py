"""pjsua2 to pjsua2: the softphone (its own process and endpoint) calls the gateway.

Covers simultaneous calls (as many as the pjsua2 wheel's call table holds) with audio both ways, G.722 wideband, RFC 4733 DTMF, TCP,
486 beyond ``max_calls`` and ``voicegw call`` itself.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from gateway.telephony.sip.runtime import CALLS_PER_PROCESS
from gateway.voice.audio import read_wav
from tests.sip.conftest import ROOT, check_tone_calls, run_softphone, softphone_results, write_tone

pytestmark = [pytest.mark.sip, pytest.mark.timeout(180)]


def test_simultaneous_calls_with_audio_both_ways(start_gateway, tmp_path) -> None:
    """As many calls as one pjsua2 process holds, at once, audio both ways; one more gets 486."""
    n = CALLS_PER_PROCESS
    gw = start_gateway(mode="tone")
    tone = write_tone(tmp_path / "caller.wav", 3.0)
    procs = [run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", str(k), "--play", str(tone),
                           "--seconds", "6", "--pause", "0.5", background=True)
             for k in (n // 2, n - n // 2)]  # the callers in two processes
    time.sleep(2.0)
    extra = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--seconds", "1", timeout=60)
    assert [r["status"] for r in softphone_results(extra.stdout)] == [486]
    check_tone_calls(procs, gw, n, min_voiced_rx=200)  # about 6 s of the bot's tone each
    assert gw.alive()


def test_ended_calls_leave_their_bridge_ports_to_the_next_calls(start_gateway, tmp_path) -> None:
    """Three rounds of two calls, one after the other: the gateway makes two conference-bridge
    ports and hands them on (a port taken apart while pjmedia's clock still calls it killed the
    process), and every call still has audio both ways."""
    gw = start_gateway(mode="tone")
    tone = write_tone(tmp_path / "caller.wav", 3.0)
    for _ in range(3):
        proc = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", "2", "--play", str(tone),
                             "--seconds", "4", background=True)
        check_tone_calls([proc], gw, 2, min_voiced_rx=150)  # about 4 s of the bot's tone each
    assert gw.stats()["ports_created"] == 2 and gw.alive()


def test_the_wheels_call_table_size_is_as_documented() -> None:
    """The softphone's own endpoint refuses the call past ``CALLS_PER_PROCESS`` locally."""
    code = (
        "from gateway.telephony.sip.softphone import Softphone, PhoneCall\n"
        "calls = [PhoneCall(uri='sip:nobody@127.0.0.1:9', seconds=1) for _ in range(8)]\n"
        "Softphone(max_calls=32).run(calls, timeout=3)\n"
        "print('placed', sum(1 for c in calls if not c.reason.startswith('not placed')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert f"placed {CALLS_PER_PROCESS}" in done.stdout, done.stdout + done.stderr[-2000:]


def test_a_failing_call_does_not_disturb_the_others(start_gateway, tmp_path) -> None:
    gw = start_gateway(mode="tone", fail_first=True)
    first = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--seconds", "8", background=True)
    gw.expect("session_started")
    second = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--seconds", "5", background=True)
    (r1,) = softphone_results(first.communicate(timeout=60)[0])
    (r2,) = softphone_results(second.communicate(timeout=60)[0])
    assert r1["answered"] and r1["voiced_rx"] < 150, r1  # hung up by the gateway after about 1 s
    assert r2["answered"] and r2["voiced_rx"] >= 200 and r2["gaps"] <= 25, r2  # untouched
    tail = gw.tail(200)
    assert "tick failed" in tail and "synthetic failure of one call's voice session" in tail, tail[-3000:]
    assert "ended: error" in tail, tail[-3000:]  # the broken call ended as an error, alone
    assert gw.alive()


def test_ten_simultaneous_calls_across_three_gateway_nodes(start_gateway, tmp_path) -> None:
    """Ten calls at once with audio both ways on one machine: three gateway processes (nodes),
    as a deployment past one pjsua2 process's call table would run them."""
    tone = write_tone(tmp_path / "caller.wav", 3.0)
    nodes = [start_gateway(mode="tone") for _ in range(3)]
    spread = [4, 3, 3]
    procs = [run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", str(k), "--play", str(tone),
                           "--seconds", "6", background=True) for gw, k in zip(nodes, spread)]
    results = []
    for proc in procs:
        results += softphone_results(proc.communicate(timeout=120)[0])
    assert len(results) == 10
    for r in results:
        assert r["answered"] and r["voiced_rx"] >= 200 and r["gaps"] <= 25, r
    for gw, k in zip(nodes, spread):
        for _ in range(k):
            assert gw.expect("session_stopped", timeout=30)["voiced_in"] >= 100


def test_g722_call_runs_at_16_khz(start_gateway, tmp_path) -> None:
    gw = start_gateway(mode="echo")
    tone = write_tone(tmp_path / "caller.wav", 2.0, rate=16000)
    done = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--codecs", "G722", "--play", str(tone),
                         "--seconds", "4", "--record", str(tmp_path / "reply.wav"))
    (result,) = softphone_results(done.stdout)
    assert result["codec"] == "G722" and result["rate"] == 16000, result
    assert gw.expect("session_started")["rate"] == 16000
    assert result["voiced_rx"] >= 50, result  # the caller's tone came back (echo session)
    pcm, rate = read_wav(tmp_path / "reply.wav")
    assert rate == 16000
    spectrum = np.abs(np.fft.rfft(np.frombuffer(pcm, dtype="<i2").astype(np.float32)))
    peak_hz = np.argmax(spectrum) * rate / (len(pcm) // 2)
    assert abs(peak_hz - 700) < 20, peak_hz  # the echoed 700 Hz tone, through G.722 both ways


def test_rfc4733_dtmf_reaches_the_session(start_gateway, tmp_path) -> None:
    gw = start_gateway(mode="tone")
    done = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--dtmf", "12#", "--seconds", "3")
    assert softphone_results(done.stdout)[0]["answered"]
    digits = "".join(gw.expect("dtmf", timeout=10)["digit"] for _ in range(3))
    assert digits == "12#"


def test_tcp_transport(start_gateway, tmp_path) -> None:
    gw = start_gateway(mode="tone", sip={"transports": ["udp", "tcp"]})
    done = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--transport", "tcp", "--seconds", "2")
    (result,) = softphone_results(done.stdout)
    assert result["answered"] and result["voiced_rx"] >= 50, result


def test_calls_beyond_max_calls_get_486(start_gateway, tmp_path) -> None:
    gw = start_gateway(mode="tone", sip={"max_calls": 2})
    done = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", "3", "--seconds", "3")
    results = softphone_results(done.stdout)
    assert sorted(r["status"] for r in results) == [200, 200, 486], results
    assert gw.stats()["rejected"] == 1


def test_calls_beyond_the_nodes_voice_max_calls_get_486(start_any_gateway, tmp_path) -> None:
    """``voice.max_calls`` (the node's, over every voice server) below ``sip.max_calls``: three
    calls at once through the real voice pipeline, the third gets 486 before it is answered,
    from the endpoint in process and from the SIP front alike."""
    light = {"vad": {"engine": "webrtc"}, "tts": {"engine": "espeak"}, "max_calls": 2,
             "asr": {"open_engine": "pocketsphinx", "closed_engine": "pocketsphinx", "cross_check": False}}
    gw = start_any_gateway(real=True, voice=light)
    done = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", "3", "--seconds", "3")
    results = softphone_results(done.stdout)
    assert sorted(r["status"] for r in results) == [200, 200, 486], results
    assert "voice.max_calls" in gw.tail(200)


def test_no_call_is_placed_while_the_node_holds_its_most_calls(start_any_gateway, tmp_path) -> None:
    """With ``voice.max_calls`` reached by a call in progress, a call the core asks for is not
    placed (its session would be refused once the callee answered): the originate fails at once."""
    light = {"vad": {"engine": "webrtc"}, "tts": {"engine": "espeak"}, "max_calls": 1,
             "asr": {"open_engine": "pocketsphinx", "closed_engine": "pocketsphinx", "cross_check": False}}
    gw = start_any_gateway(real=True, voice=light)
    phone = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--seconds", "8", background=True)
    deadline = time.monotonic() + 30
    while gw.stats()["calls"] < 1:
        assert time.monotonic() < deadline, gw.tail()
        time.sleep(0.3)
    gw.send(cmd="originate", target="sip:customer@127.0.0.1:9", conversation_id="conv-full")
    failed = gw.expect("originate_failed", timeout=20)
    assert "voice.max_calls" in failed["error"], failed
    phone.wait(timeout=60)


def test_staggered_calls_are_placed_one_after_another(start_gateway, tmp_path) -> None:
    """``--stagger``: call i is placed that many seconds after call i-1 (the bench's arrivals)."""
    gw = start_gateway(mode="tone")
    tone = write_tone(tmp_path / "caller.wav", 1.0)
    done = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", "3", "--stagger", "1.5",
                         "--play", str(tone), "--seconds", "2", timeout=60)
    results = softphone_results(done.stdout)
    assert [r["status"] for r in results] == [200, 200, 200]
    answered = [r["answered_at"] for r in results]
    gaps = [b - a for a, b in zip(answered, answered[1:])]
    assert all(1.3 <= g <= 2.5 for g in gaps), gaps


def test_voicegw_call_records_the_reply(start_gateway, tmp_path) -> None:
    gw = start_gateway(mode="tone")
    tone = write_tone(tmp_path / "caller.wav", 1.0)
    reply = tmp_path / "reply.wav"
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "call", f"sip:bot@127.0.0.1:{gw.port}", "--play", str(tone),
         "--record", str(reply), "--seconds", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "call 0: 200" in done.stdout
    pcm, rate = read_wav(reply)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    assert rate == 8000 and len(samples) >= 2 * rate
    assert np.sqrt(np.mean(samples**2)) > 1000  # the gateway's tone, not silence


def test_one_endpoint_per_process_is_enforced() -> None:
    code = (
        "from gateway.telephony.sip.runtime import PjRuntime, SipError\n"
        "a = PjRuntime('a'); a.start()\n"
        "try:\n    PjRuntime('b').start()\nexcept SipError as e:\n    print('refused:', e)\n"
        "a.stop()\n"
        "c = PjRuntime('c'); c.start(); c.stop(); print('restarted')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: a SIP endpoint (a) is already running" in done.stdout
    assert "restarted" in done.stdout


def test_tls_transport(start_gateway, tmp_path) -> None:
    """SIP over TLS (the wheel links OpenSSL): a self-signed certificate on the gateway side."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    gw = start_gateway(mode="tone", sip={"transports": ["udp", "tls"], "tls_cert_file": str(cert),
                                         "tls_key_file": str(key)})
    tls_port = gw.ports["tls"]
    done = run_softphone(f"sip:bot@127.0.0.1:{tls_port}", tmp_path, "--transport", "tls", "--seconds", "2")
    (result,) = softphone_results(done.stdout)
    assert result["answered"] and result["voiced_rx"] >= 50, (result, done.stderr[-2000:])
