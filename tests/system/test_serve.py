"""`voicegw serve` as an operator runs it: every enabled channel up around one core, clean stop."""

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
               VOICEGW_VOICE__ASR__WORKERS="1")
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
        for port in (audiosocket, agi):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines)
    for name in ("voice pipeline", "asterisk channels", "web"):
        assert f"started: {name}" in log
