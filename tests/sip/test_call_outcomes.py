"""A call the gateway places over SIP and the far end does not answer is reported to the
conversation: SIPp answers the INVITE with a final 486, 480 or 503, the real core logs
``CallFailed`` with busy, no_answer or congestion (the SIP endpoint in the gateway process, and
behind two SIP workers, whose link carries the status in the error text)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.sip.conftest import PYTHON, ROOT, free_port, run_sipp, sipp_log

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
@pytest.mark.parametrize("status,reason", [("486 Busy Here", "busy"), ("480 Temporarily Unavailable", "no_answer"),
                                           ("503 Service Unavailable", "congestion")])
def test_final_response_reaches_the_conversation(tmp_path: Path, workers: int, status: str, reason: str) -> None:
    port = free_port()
    uas = run_sipp("uas_reject.xml", "", tmp_path, uas=True, port=port, background=True,
                   subst={"FINAL_STATUS": status})
    spec = {"data_dir": str(tmp_path / "data"), "target_port": port, "workers": workers}
    with open(tmp_path / "gateway.log", "wb") as log:
        proc = subprocess.run([PYTHON, "-m", "tests.sip.outcome_proc", json.dumps(spec)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=log, timeout=90)
    out, _ = uas.communicate(timeout=30)
    assert uas.returncode == 0, f"{out[-2000:]}\n{sipp_log(tmp_path, 'uas_reject.xml')}"
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    assert lines, (tmp_path / "gateway.log").read_text()[-3000:]
    events = lines[-1]["events"]
    failed = [payload for kind, payload in events if kind == "CallFailed"]
    assert [(p["reason"], p["detail"]) for p in failed] == [(reason, f"sip {status[:3]}")], events
