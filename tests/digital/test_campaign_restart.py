"""Campaigns resume after a restart without calling anyone twice: separate processes on one data
directory (set up with ``voicegw campaign``), one of them killed right after a call was dialled
and before the campaign recorded it, each ticking with the clock the test gives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

from gateway.digital.outbox import OUTBOX_FILE, Outbox
from tests.digital.campaign_helpers import CUSTOMERS, T0, customers

ROOT = Path(__file__).resolve().parents[2]
KILLED = 9


def cli(data: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VOICEGW_DATA_DIR": str(data)}
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run(data: Path, *ticks, die_after_calls: int = 0) -> subprocess.CompletedProcess[str]:
    spec = {"data_dir": str(data), "ticks": [t.isoformat() for t in ticks], "die_after_calls": die_after_calls}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tests.digital.campaign_proc", json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def held(done: subprocess.CompletedProcess[str]) -> list[bool]:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["held"]


def placed(data: Path) -> list[str]:
    path = data / "placed.jsonl"
    return [json.loads(line)["number"] for line in path.read_text().splitlines()] if path.exists() else []


def status(data: Path) -> dict:
    return json.loads(cli(data, "campaign", "status", "restart", "--json", "--attempts", "50"))


def test_a_crash_after_dialling_never_dials_again(tmp_path):
    data = tmp_path / "data"
    (tmp_path / "contacts.csv").write_text(customers("C001", "C002", "C003"))
    cli(data, "campaign", "create", "restart", "--call-first", "--rate", "10", "--concurrency", "3")
    cli(data, "campaign", "import", "restart", str(tmp_path / "contacts.csv"))
    cli(data, "campaign", "start", "restart")
    first = run(data, T0, die_after_calls=1)
    assert first.returncode == KILLED, first.stderr[-3000:]
    assert placed(data) == [CUSTOMERS["C001"]]
    attempts = status(data)["attempts"]
    assert [(a["ref"], a["state"]) for a in attempts] == [("c001", "claimed")]  # dialled, not recorded
    # a fresh process: the dead one's lease holds 30 s, then the new one settles and goes on
    assert held(run(data, T0 + timedelta(seconds=10), T0 + timedelta(seconds=31), T0 + timedelta(seconds=40))) == [
        False, True, True]
    assert Counter(placed(data)) == Counter({CUSTOMERS["C001"]: 1, CUSTOMERS["C002"]: 1, CUSTOMERS["C003"]: 1})
    report = status(data)
    assert report["outcomes"] == {"calling": 3} and report["contacts"] == {"active": 3}
    # and another: nothing reported for 5 minutes -> unknown, retried after 30 minutes, once each
    assert held(run(data, T0 + timedelta(minutes=1), T0 + timedelta(minutes=6))) == [True, True]
    assert len(placed(data)) == 3 and status(data)["outcomes"] == {"unknown": 3}
    assert held(run(data, T0 + timedelta(minutes=36, seconds=1), T0 + timedelta(minutes=37)))
    assert Counter(placed(data)) == Counter({number: 2 for number in (CUSTOMERS["C001"], CUSTOMERS["C002"],
                                                                    CUSTOMERS["C003"])})
    second = [a for a in status(data)["attempts"] if a["n"] == 2]
    assert sorted(a["ref"] for a in second) == ["c001", "c002", "c003"]


def test_reminders_sent_before_a_restart_are_not_sent_again(tmp_path):
    data = tmp_path / "data"
    (tmp_path / "contacts.csv").write_text(customers("C004", "C005"))
    cli(data, "campaign", "create", "restart", "--escalate-after", "30")
    cli(data, "campaign", "import", "restart", str(tmp_path / "contacts.csv"))
    cli(data, "campaign", "start", "restart")
    assert held(run(data, T0)) == [True]
    assert held(run(data, T0 + timedelta(minutes=10))) == [True]  # the lease was handed back on exit
    outbox = Outbox(data / OUTBOX_FILE)
    try:
        sent = Counter(m.to for m in outbox.messages(limit=100) if m.direction == "out")
    finally:
        outbox.close()
    assert sent == Counter({CUSTOMERS["C004"]: 1, CUSTOMERS["C005"]: 1})
    assert placed(data) == []
    assert held(run(data, T0 + timedelta(minutes=31)))
    assert Counter(placed(data)) == Counter({CUSTOMERS["C004"]: 1, CUSTOMERS["C005"]: 1})
    assert status(data)["outcomes"] == {"no_reply": 2, "calling": 2}
