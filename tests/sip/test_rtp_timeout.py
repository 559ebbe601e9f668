"""The RTP inactivity timeout over real SIP (SIPp on loopback; ``gateway/telephony/sip/rtp_watch.py``).

Three callers at once on one gateway with ``sip.rtp_timeout_seconds`` = 3 (the fake voice
pipeline of ``fakes.py``: the SIP side is what is tested): one sends a second of RTP and then
nothing, and never a BYE (the gateway must send one, within the timeout + 2 s); one keeps sending
RTP for 6.5 s and hangs up itself (never hung up by the gateway); one sends a second of RTP, holds
the call (re-INVITE ``a=sendonly``), sends nothing for 6.5 s and hangs up itself (the active
timeout does not apply to a held call); one does the same and is never heard of again (the hold
timeout, 8 s, ends it). Runs with the SIP endpoint in the gateway process and with two SIP workers. Then, with the real voice pipeline and core, a caller
that sends no RTP at all: its conversation records how the call ended.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sip.conftest import ROOT, run_sipp, sipp_log, write_ulaw_tone

pytestmark = [pytest.mark.sip, pytest.mark.timeout(90)]

RTP_TIMEOUT_S = 3
HOLD_TIMEOUT_S = 8
STREAM_S = 1.0  # RTP the silent caller and the holding callers send before they stop
SLACK_S = 2.0  # the BYE is due within the timeout + this (the check runs every second)
CALL_MS = 6500  # the honest and the held calls last longer than timeout + slack after their RTP
HOLD_AT_S = 0.5  # the holding callers re-INVITE (sendonly) this long after the ACK (their scenarios pause)


def _call_id(name: str) -> list[str]:
    """SIPp's Call-ID for this caller: ``rtp-<name>-...`` (names the call in events and logs)."""
    return ["-cid_str", f"rtp-{name}-%u-%p@%s"]


def _finish(proc: subprocess.Popen[str], tmp_path: Path, scenario: str) -> None:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"sipp {scenario} failed ({proc.returncode}):\n{out[-2000:]}\n" \
                                 f"{sipp_log(tmp_path, scenario)}"


def test_a_caller_that_stops_sending_rtp_is_hung_up(start_any_gateway, tmp_path: Path) -> None:
    write_ulaw_tone(tmp_path / "short.ulaw", STREAM_S)
    write_ulaw_tone(tmp_path / "caller.ulaw", 2.0)
    gw = start_any_gateway(mode="tone", sip={"rtp_timeout_seconds": RTP_TIMEOUT_S,
                                             "rtp_hold_timeout_seconds": HOLD_TIMEOUT_S})
    target = f"127.0.0.1:{gw.port}"
    due_ms = int((STREAM_S + RTP_TIMEOUT_S + SLACK_S) * 1000)
    t0 = time.monotonic()
    silent = run_sipp("uac_rtp_stops.xml", target, tmp_path, background=True, extra=_call_id("stops"),
                      subst={"BYE_WITHIN_MS": str(due_ms)})
    honest = run_sipp("uac_rtp_keeps.xml", target, tmp_path, background=True, extra=_call_id("keeps"),
                      subst={"CALL_MS": str(CALL_MS)})
    held = run_sipp("uac_rtp_hold.xml", target, tmp_path, background=True, extra=_call_id("hold"),
                    subst={"CALL_MS": str(CALL_MS)})
    gone = run_sipp("uac_rtp_hold_dead.xml", target, tmp_path, background=True, extra=_call_id("holdgone"),
                    subst={"BYE_WITHIN_MS": str(int((HOLD_TIMEOUT_S + SLACK_S) * 1000))})

    _finish(silent, tmp_path, "uac_rtp_stops.xml")  # the gateway's BYE came within timeout + 2 s
    elapsed = time.monotonic() - t0
    assert elapsed >= STREAM_S + RTP_TIMEOUT_S - 0.5, f"hung up after {elapsed:.1f} s: before the timeout"
    _finish(honest, tmp_path, "uac_rtp_keeps.xml")  # no BYE from the gateway while RTP flowed
    _finish(held, tmp_path, "uac_rtp_hold.xml")  # nor while the caller held the call
    _finish(gone, tmp_path, "uac_rtp_hold_dead.xml")  # a hold with no end: BYE within hold timeout + 2 s
    elapsed = time.monotonic() - t0
    assert elapsed >= HOLD_AT_S + HOLD_TIMEOUT_S - 0.5, f"held call hung up after {elapsed:.1f} s"

    stopped = {s["call_id"].split("-", 2)[1]: s for s in (gw.expect("session_stopped") for _ in range(4))}
    assert stopped["stops"]["reason"] == "rtp timeout"  # the session (and the conversation) is told why
    assert stopped["stops"]["voiced_in"] >= 25, stopped["stops"]  # its RTP did flow before it stopped
    assert stopped["keeps"]["reason"] == "hangup"
    assert stopped["hold"]["reason"] == "hangup"
    assert stopped["holdgone"]["reason"] == "rtp timeout"
    timed_out = [line for line in gw.log_path.read_text(errors="replace").splitlines()
                 if "no RTP from the far end" in line]
    assert len(timed_out) == 2 and "call rtp-stops-" in timed_out[0], timed_out  # a log line with the call id
    assert "call rtp-holdgone-" in timed_out[1] and "while it holds the call" in timed_out[1], timed_out
    deadline = time.monotonic() + 5
    while ((stats := gw.stats())["rtp_timeouts"], stats["calls"]) != (2, 0) and time.monotonic() < deadline:
        time.sleep(0.3)  # workers report their calls and counters every half second
    assert stats["rtp_timeouts"] == 2 and stats["calls"] == 0, stats


def test_the_conversation_records_the_rtp_timeout(start_gateway, tmp_path: Path) -> None:
    """With the real voice pipeline and core: a caller that sends no RTP at all is hung up, and
    its conversation's log says the channel closed with ``rtp timeout``."""
    gw = start_gateway(real=True, sip={"rtp_timeout_seconds": RTP_TIMEOUT_S})
    result = run_sipp("uac_rtp_none.xml", f"127.0.0.1:{gw.port}", tmp_path, extra=_call_id("none"),
                      subst={"BYE_WITHIN_MS": str(int((RTP_TIMEOUT_S + SLACK_S) * 1000))})
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{sipp_log(tmp_path, 'uac_rtp_none.xml')}"
    match = re.search(r"call rtp-none-\S+: conversation (\w+)", gw.log_path.read_text(errors="replace"))
    assert match, gw.tail()
    assert gw.close() == 0
    shown = subprocess.run([sys.executable, "-m", "gateway.cli", "conversations", "show", match.group(1)],
                           cwd=ROOT, env={**os.environ, "VOICEGW_DATA_DIR": str(tmp_path / "data")},
                           capture_output=True, text=True, timeout=60)
    closed = [line for line in shown.stdout.splitlines() if "ChannelClosed" in line]
    assert len(closed) == 1 and '"reason": "rtp timeout"' in closed[0], shown.stdout + shown.stderr


# ---- the decision alone (sans-IO) ---------------------------------------------------------------
def test_the_clock_counts_from_the_last_packet_and_restarts_on_hold_changes() -> None:
    from gateway.telephony.sip.rtp_watch import RtpClock, RtpTimeouts, RxState

    limits = RtpTimeouts(active=3.0, hold=10.0)
    clock = RtpClock(now=0.0)
    assert clock.observe(2.9, RxState(0, False), limits) is None  # nothing ever came: counted from the ACK
    assert clock.observe(2.9, RxState(40, False), limits) is None  # packets: the clock restarts
    assert clock.observe(5.8, RxState(40, False), limits) is None
    verdict = clock.observe(5.9, RxState(40, False), limits)
    assert verdict is not None and not verdict.held and abs(verdict.idle - 3.0) < 1e-9
    assert clock.observe(9.0, RxState(40, False), limits) is None  # a verdict once

    held = RtpClock(now=0.0)
    assert held.observe(1.0, RxState(50, False), limits) is None
    assert held.observe(2.0, RxState(50, True), limits) is None  # hold: the longer limit, from now
    assert held.observe(11.9, RxState(50, True), limits) is None
    assert held.observe(12.0, RxState(50, False), limits) is None  # resumed: the clock restarts
    verdict = held.observe(15.0, RxState(50, False), limits)
    assert verdict is not None and not verdict.held

    off = RtpClock(now=0.0)
    assert off.observe(1e6, RxState(0, True), RtpTimeouts(active=3.0, hold=0.0)) is None  # 0 = off
    assert off.observe(1e6 + 1, RxState(0, False), RtpTimeouts(active=3.0, hold=0.0)) is None  # resumed
    assert off.observe(1e6 + 4, RxState(0, False), RtpTimeouts(active=3.0, hold=0.0)) is not None
    assert not RtpTimeouts(0.0, 0.0).enabled
