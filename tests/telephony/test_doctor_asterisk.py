"""``voicegw doctor`` with Asterisk: AMI and ARI logins, journey queues over QueueStatus, and whose
a taken port is (this gateway, another voicegw, another program)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.config import load_settings
from gateway.doctor import _port, checks
from gateway.telephony.asterisk_checks import ami_checks, ari_check
from gateway.telephony.asterisk_queues import queue_plan
from tests.telephony import fixtures
from tests.telephony.fake_ami import ReplayAmi
from tests.telephony.test_ari import RawReplayHttp

ROOT = Path(__file__).resolve().parents[2]


def _settings(tmp_path, **overrides):
    return load_settings(environ={}, overrides={"data_dir": str(tmp_path), **overrides})


async def test_ami_login_and_every_journey_queue_over_queuestatus(tmp_path):
    fake = ReplayAmi(fixtures.load("captures/ami_e_doctor_login_coresettings_queuestatus"))
    port = await fake.start()
    settings = _settings(tmp_path, ami={"enabled": True, "port": port, "secret": "gatewaysecret"})
    try:
        results = {c.name: c for c in await ami_checks(settings, queue_plan(settings), timeout=5)}
    finally:
        await fake.close()
    assert fake.names() == ["Login", "CoreSettings", "QueueStatus", "Logoff"]
    assert results["AMI login"].ok and "Asterisk 22.10.1" in results["AMI login"].detail
    # the recorded PBX has support, support-es and billing only
    assert results["Asterisk queue support"].ok and "default queue" in results["Asterisk queue support"].detail
    assert results["Asterisk queue billing"].ok
    for missing in ("orders", "lending", "scheduling", "security"):
        check = results[f"Asterisk queue {missing}"]
        assert not check.ok and check.required and "fall back to 'support'" in check.detail
        assert "queues_voicegw.conf" in check.fix
    assert "order_status" in results["Asterisk queue orders"].detail
    languages = results["Asterisk language queues"]
    assert not languages.ok and not languages.required and "1 of 6 present" in languages.detail


async def test_ami_refused_login_is_told_from_an_unreachable_pbx(tmp_path):
    fake = ReplayAmi(fixtures.load("ami/ami_b_login_wrong_secret"))
    port = await fake.start()
    try:
        refused = await ami_checks(_settings(tmp_path, ami={"enabled": True, "port": port, "secret": "x"}), None,
                                   timeout=2)
    finally:
        await fake.close()
    assert [c.ok for c in refused] == [False] and "refused" in refused[0].detail
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = await ami_checks(_settings(tmp_path, ami={"enabled": True, "port": closed, "secret": "x"}), None, timeout=1)
    assert [c.ok for c in down] == [False] and "unreachable" in down[0].detail


async def test_ari_login_against_recorded_asterisk(tmp_path):
    fake = RawReplayHttp(fixtures.load("ari/ari_a_asterisk_info"))  # 200 with auth, then 401
    port = await fake.start()
    url = f"http://127.0.0.1:{port}"
    try:
        good = await ari_check(_settings(tmp_path, ari={"enabled": True, "url": url, "password": "arisecret"}))
        bad = await ari_check(_settings(tmp_path, ari={"enabled": True, "url": url, "password": "wrong"}))
    finally:
        await fake.close()
    assert good.ok and "Asterisk 22.10.1" in good.detail
    assert not bad.ok and "refused user 'gateway' (401)" in bad.detail
    assert b"Authorization: Basic Z2F0ZXdheTphcmlzZWNyZXQ=" in fake.requests[0]


def test_doctor_without_ami_says_the_queues_were_not_checked(tmp_path):
    results = {c.name: c for c in checks(_settings(tmp_path, web={"port": 0}, audiosocket={"port": 0},
                                                   fastagi={"port": 0}))}
    assert not results["Asterisk queues"].required and "ami.enabled is false" in results["Asterisk queues"].detail


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_port_another_program_holds_is_named(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import socket,time; s=socket.socket(); "
                               "s.bind(('127.0.0.1',0)); s.listen(); print(s.getsockname()[1], flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        check = _port("127.0.0.1", port, "FastAGI")
    finally:
        holder.kill()
        holder.wait()
    assert not check.ok and f"pid {holder.pid}" in check.detail and "another program" in check.detail


def test_a_port_this_running_gateway_holds_is_no_failure(tmp_path):
    """`voicegw doctor` beside `voicegw serve` of the same configuration: its ports are in use by it."""
    web = _free_port()
    config = tmp_path / "site.yaml"
    config.write_text(f"data_dir: {tmp_path}\nweb: {{port: {web}}}\naudiosocket: {{enabled: false}}\n"
                      "fastagi: {enabled: false}\ntwilio_media: {enabled: false}\noutreach: {enabled: false}\n",
                      encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/healthz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "voicegw serve did not start"
                time.sleep(0.2)
        settings = load_settings(str(config), environ={})
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            mine = _port("127.0.0.1", web, "web", str(config))
            other = _port("127.0.0.1", web, "web", str(tmp_path / "another.yaml"))
        finally:
            os.chdir(cwd)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert settings.web.port == web
    assert mine.ok and "in use by this gateway" in mine.detail and f"pid {proc.pid}" in mine.detail
    assert not other.ok and "another voicegw" in other.detail
