"""`voicegw serve` as an operator runs it: every enabled channel up around one core, clean stop."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(180)
def test_serve_starts_every_channel_and_stops_cleanly(tmp_path):
    web, audiosocket, agi = free_port(), free_port(), free_port()
    env = dict(os.environ, VOICEGW_DATA_DIR=str(tmp_path), VOICEGW_WEB__PORT=str(web),
               VOICEGW_AUDIOSOCKET__PORT=str(audiosocket), VOICEGW_FASTAGI__PORT=str(agi),
               VOICEGW_VOICE__ASR__WORKERS="1", VOICEGW_SIP__ENABLED="true", VOICEGW_SIP__PORT="0",
               VOICEGW_SIP__WORKERS="2")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "voicegw is running" in line:
                break
        assert any("voicegw is running" in line for line in lines), "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/healthz", timeout=10) as response:
            assert response.status == 200
            health = json.loads(response.read())
        node_max = 12 * len(os.sched_getaffinity(0))  # voice.max_calls 0: a dozen calls per usable core
        assert health["channels"]["voice pipeline"] == {"ok": True, "detail": f"0 of {node_max} calls (voice.max_calls)"}
        for port in (audiosocket, agi):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert "voicegw_sip_workers_alive 2" in metrics and "voicegw_sip_calls 0" in metrics, metrics
        assert "voicegw_voice_calls 0" in metrics and "voicegw_asr_whisper_restarts_total 0" in metrics, metrics
        assert f"voicegw_voice_calls_max {node_max}.0" in metrics, metrics
        # the Asterisk servers' session caps report to the same /metrics (the gateway hands it to them)
        for server in ("audiosocket", "fastagi"):
            assert f'voicegw_sessions_refused_total{{server="{server}"}} 0.0' in metrics, metrics
        workers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "gateway.telephony.sip.worker"],
                                 capture_output=True, text=True).stdout.split()
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        for pid in workers:  # the SIP workers stopped with the gateway
            assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines)
    for name in ("voice pipeline", "asterisk channels", "sip endpoint", "web"):
        assert f"started: {name}" in log
