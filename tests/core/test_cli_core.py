"""The core's commands as a user runs them: voicegw chat, voicegw doctor."""

import os
import subprocess
import sys

import pytest

from gateway.voice.cores import usable_cores
from tests.voice.test_cores import quota_cgroup


def run(args, tmp_path, stdin=""):
    env = dict(os.environ, VOICEGW_DATA_DIR=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


def test_chat_in_the_terminal_runs_a_journey(tmp_path):
    result = run(["chat"], tmp_path, stdin="where is my order\n10001\nno\nno thanks\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bot> Hi there!" in out
    assert "order number" in out and "headphones" in out
    assert "Thanks for chatting" in out


def test_chat_voice_wording_and_dtmf(tmp_path):
    # the caller ID names Alice (a claim): she is greeted, then chooses a PIN check over a code
    result = run(["chat", "--voice", "--caller-id", "+15551234567"], tmp_path,
                 stdin="reset my password\nPIN\n/dtmf 4321\nno\n")
    assert result.returncode == 0, result.stderr
    assert "Hello Alice, thanks for calling." in result.stdout
    assert "say code, or pin" in result.stdout.lower() and "account number" not in result.stdout
    assert "[sms follow-up 'password_reset' sent to the phone ending in 4567" in result.stdout
    assert "+15551234567" not in result.stdout


def test_doctor_reports_checks_and_fixes(tmp_path):
    result = run(["doctor"], tmp_path)
    assert "[ok  ] journeys" in result.stdout
    assert "data directory" in result.stdout
    assert "whisper model" in result.stdout
    cores = usable_cores()
    assert f"[ok  ] voice capacity: {12 * cores} calls at once (voice.max_calls automatic: 12 per core, {cores} usable core" \
        in result.stdout
    env_bad = run(["doctor"], tmp_path / "x")  # a fresh data dir is created
    assert "data directory" in env_bad.stdout


def test_bad_configuration_fails_at_start_with_the_key(tmp_path):
    env = dict(os.environ, VOICEGW_DATA_DIR=str(tmp_path), VOICEGW_CONTEXT__BACKEND="postgres")
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "doctor"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2
    assert "context.backend" in result.stderr and "'postgres'" in result.stderr


def test_doctor_names_a_corrupt_store_and_fails(tmp_path):
    (tmp_path / "conversations.db").write_bytes(b"garbage" * 50)
    result = run(["doctor"], tmp_path)
    assert result.returncode == 1
    assert "[FAIL] context store (sqlite)" in result.stdout and "conversations.db" in result.stdout


def test_doctor_in_a_cgroup_with_a_cpu_quota_counts_its_cores(tmp_path):
    """``voicegw doctor`` run in a real cgroup limited to one CPU (where this host lets the tests
    make one) says the node takes 12 calls, sized by one core under that quota; set by hand, the
    cap is reported as set."""
    group = quota_cgroup(f"voicegw-doctor-{os.getpid()}")
    if group is None:
        pytest.skip("no writable cgroup with the cpu controller here (needs root)")
    try:
        env = dict(os.environ, VOICEGW_DATA_DIR=str(tmp_path))
        inside = subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" -m gateway.cli doctor',
                                 sys.executable], capture_output=True, text=True, env=env, timeout=120)
        env["VOICEGW_VOICE__MAX_CALLS"] = "7"
        set_by_hand = subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" -m gateway.cli doctor',
                                      sys.executable], capture_output=True, text=True, env=env, timeout=120)
    finally:
        group.rmdir()
    assert "voice capacity: 12 calls at once (voice.max_calls automatic: 12 per core, 1 usable core, " \
           "narrowed by a CPU quota of 1)" in inside.stdout, inside.stdout + inside.stderr
    assert "voice capacity: 7 calls at once (voice.max_calls; 1 usable core, narrowed by a CPU quota of 1)" \
        in set_by_hand.stdout, set_by_hand.stdout
