"""One gateway node with SIP worker processes behind its SIP front (``sip.workers``).

pjsua2 callers (the softphone, each process holding at most ``CALLS_PER_PROCESS`` calls) call the
front's one address; the voice sessions run in the gateway process, the calls' SIP and RTP in the
workers.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from gateway.telephony.sip.runtime import CALLS_PER_PROCESS
from gateway.voice.audio import read_wav
from tests.sip.conftest import check_tone_calls, run_softphone, softphone_results, write_tone

pytestmark = [pytest.mark.sip, pytest.mark.timeout(240)]


def _wait(predicate, timeout: float, what: str, gw) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not seen within {timeout} s\n{gw.tail()}"
        time.sleep(0.3)


def test_twelve_simultaneous_calls_to_one_gateway_node(start_gateway, tmp_path) -> None:
    """Three workers of four calls: twelve calls at once on the node's one SIP address, audio both
    ways and clean, spread over the workers; the thirteenth gets 486 from the front."""
    n = 3 * CALLS_PER_PROCESS
    gw = start_gateway(mode="tone", sip={"workers": 3, "max_calls": n})
    tone = write_tone(tmp_path / "caller.wav", 3.0)
    procs = [run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", str(CALLS_PER_PROCESS),
                           "--play", str(tone), "--seconds", "7", "--pause", "0.3", background=True)
             for _ in range(3)]  # each caller process holds CALLS_PER_PROCESS calls too
    _wait(lambda: gw.stats()["calls"] == n, 30, f"{n} calls in progress", gw)
    assert [w["calls"] for w in gw.stats()["workers"]] == [CALLS_PER_PROCESS] * 3
    extra = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--seconds", "1", timeout=60)
    assert [r["status"] for r in softphone_results(extra.stdout)] == [486]
    check_tone_calls(procs, gw, n, min_voiced_rx=250)  # about 7 s of the bot's tone each
    assert gw.stats()["rejected"] == 1 and gw.alive()


def test_a_worker_that_dies_costs_only_its_own_calls(start_gateway, tmp_path) -> None:
    """Four calls over two workers; one worker is killed mid-call. The other worker's calls go
    on with clean audio, the dead worker's sessions are stopped, it is restarted, and the node
    takes calls again."""
    gw = start_gateway(mode="tone", sip={"workers": 2})
    tone = write_tone(tmp_path / "caller.wav", 8.0)
    phones = [run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", "2", "--play", str(tone),
                            "--seconds", "9", "--pause", "0.3", background=True) for _ in range(2)]
    _wait(lambda: [w["calls"] for w in gw.stats()["workers"]] == [2, 2], 30, "two calls on each worker", gw)
    time.sleep(2.0)
    victim = gw.stats()["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    lost = [gw.expect("session_stopped", timeout=30) for _ in range(2)]
    assert all(s["reason"] == "SIP worker lost" for s in lost), lost
    results = []
    for proc in phones:
        results += softphone_results(proc.communicate(timeout=120)[0])
    assert len(results) == 4
    heard = sorted(r["voiced_rx"] for r in results)
    assert heard[2] >= 400 and heard[3] >= 400, results  # the surviving worker's calls: ~9 s of tone
    assert heard[1] < 300, results  # the dead worker's calls went silent at the kill (~3 s in)
    survivors = [r for r in results if r["voiced_rx"] >= 400]
    assert all(r["gaps"] <= 25 for r in survivors), survivors
    for _ in range(2):
        assert gw.expect("session_stopped", timeout=30)["reason"] == "hangup"
    _wait(lambda: all(w["alive"] for w in gw.stats()["workers"]) and gw.stats()["workers"][0]["pid"] != victim["pid"],
          30, "the worker restarted", gw)
    again = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--calls", "3", "--seconds", "2", timeout=90)
    assert [r["answered"] for r in softphone_results(again.stdout)] == [True] * 3, again.stderr[-2000:]
    assert gw.alive()


def test_g722_through_a_worker_echoes_at_16_khz(start_gateway, tmp_path) -> None:
    """Wideband audio crosses the worker link both ways: the echo session returns the caller's tone."""
    gw = start_gateway(mode="echo", sip={"workers": 1})
    tone = write_tone(tmp_path / "caller.wav", 2.0, rate=16000)
    done = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--codecs", "G722", "--play", str(tone),
                         "--seconds", "4", "--record", str(tmp_path / "reply.wav"))
    (result,) = softphone_results(done.stdout)
    assert result["codec"] == "G722" and result["rate"] == 16000, result
    assert gw.expect("session_started")["rate"] == 16000
    pcm, rate = read_wav(tmp_path / "reply.wav")
    spectrum = np.abs(np.fft.rfft(np.frombuffer(pcm, dtype="<i2").astype(np.float32)))
    peak_hz = np.argmax(spectrum) * rate / (len(pcm) // 2)
    assert rate == 16000 and abs(peak_hz - 700) < 20, peak_hz
