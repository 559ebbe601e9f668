"""The core's commands as a user runs them: voicegw chat, voicegw doctor."""

import os
import subprocess
import sys


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
