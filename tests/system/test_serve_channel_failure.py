"""`voicegw serve` when a configured channel cannot start (its FastAGI port is taken): it stops with
exit status 1 and says why; with --keep-going it runs and /healthz names the failed channel (503)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

LIGHT = {"VOICEGW_VOICE__VAD__ENGINE": "webrtc", "VOICEGW_VOICE__TTS__ENGINE": "espeak",
         "VOICEGW_VOICE__ASR__OPEN_ENGINE": "pocketsphinx", "VOICEGW_VOICE__ASR__CROSS_CHECK": "false"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(tmp_path, *args: str, agi_port: int, web: int) -> subprocess.Popen:
    env = dict(os.environ, VOICEGW_DATA_DIR=str(tmp_path), VOICEGW_WEB__PORT=str(web),
               VOICEGW_AUDIOSOCKET__PORT=str(free_port()), VOICEGW_FASTAGI__PORT=str(agi_port),
               VOICEGW_TWILIO_MEDIA__ENABLED="false", VOICEGW_OUTREACH__ENABLED="false", **LIGHT)
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.timeout(180)
def test_serve_stops_when_a_channel_cannot_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve(tmp_path, agi_port=port, web=free_port())
        try:
            output, _ = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, output
    assert "voicegw is running" not in output
    assert "fastagi did not start" in output and "--keep-going" in output


@pytest.mark.timeout(180)
def test_keep_going_runs_and_healthz_reports_the_failed_channel(tmp_path):
    web = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve(tmp_path, "--keep-going", agi_port=port, web=web)
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
            assert any("voicegw is running WITHOUT fastagi" in line for line in lines), "".join(lines)
            with pytest.raises(urllib.error.HTTPError) as failing:
                urllib.request.urlopen(f"http://127.0.0.1:{web}/healthz", timeout=10)
            report = json.loads(failing.value.read())
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
    assert failing.value.code == 503
    assert report["status"] == "failing"
    channels = report["channels"]
    assert not channels["fastagi"]["ok"] and "did not start" in channels["fastagi"]["detail"]
    assert channels["audiosocket"]["ok"] and "listening" in channels["audiosocket"]["detail"]
    assert channels["web"]["ok"] and channels["voice pipeline"]["ok"]
    assert proc.returncode == 0


async def test_a_running_part_that_stops_working_makes_the_gateway_failing(tmp_path):
    """AMI that cannot log in is a failing channel; a server that stopped listening too."""
    from gateway.config import load_settings
    from gateway.health import HealthBook
    from gateway.telephony.asterisk import start_asterisk_channels
    from tests.telephony.fakes import FakePipeline, ScriptedCore

    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "audiosocket": {"port": 0}, "fastagi": {"port": 0},
        "ami": {"enabled": True, "port": free_port(), "secret": "x"}})
    book = HealthBook()
    items = await start_asterisk_channels(settings, ScriptedCore(), FakePipeline())
    try:
        for item in items:
            book.started("asterisk channels", item)
        report = book.report()
        assert report["status"] == "failing"
        assert not report["channels"]["ami"]["ok"] and "not logged in" in report["channels"]["ami"]["detail"]
        assert report["channels"]["fastagi"]["ok"] and report["channels"]["audiosocket"]["ok"]
        await items[1].close()  # the AudioSocket server stops
        assert book.report()["channels"]["audiosocket"] == {"ok": False, "detail": "not listening"}
    finally:
        for item in reversed(items):
            await item.close()
