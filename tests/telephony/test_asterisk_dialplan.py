"""The shipped dialplan and queue list, against what a real Asterisk 22 did with them.

The scenarios in ``captures/dp_*`` ran ``voicegw asterisk-dialplan``'s output in Asterisk 22.10.1
(captures/README.md). The first test ties them to the file shipped today: change the dialplan
and they must be recorded again.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.telephony.asterisk_queues import queue_plan, render_queues
from gateway.cli import main as voicegw
from gateway.telephony.cli import render_dialplan
from tests.telephony import fixtures

CAPTURE_SETTINGS = {"fastagi": {"port": 14573, "audiosocket_address": "127.0.0.1:19092"}}
AGENT = "Local/agent@harness-agents"


def capture_log(name: str) -> str:
    return fixtures.raw_path(f"captures/{name}.asterisk.log").read_text(encoding="utf-8")


def executed(log: str) -> list[str]:
    """``exten@context:priority App(args)`` for every dialplan step Asterisk logged, in order."""
    out = []
    for match in re.finditer(r'Executing \[([^\]]+)\] (\w+)\("[^"]*", "(.*)"\) in new stack', log):
        out.append(f"{match.group(1)} {match.group(2)}({match.group(3)})")
    return out


def test_the_recorded_dialplan_is_the_shipped_one(tmp_path):
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), **CAPTURE_SETTINGS})
    recorded = fixtures.raw_path("captures/conf/extensions_voicegw.conf").read_text(encoding="utf-8")
    assert render_dialplan(settings) == recorded, (
        "dialplans/asterisk/extensions_voicegw.conf changed since the captures in tests/telephony/captures "
        "were recorded in Asterisk: record the dp_* scenarios again")


def test_a_queue_that_does_not_exist_hung_the_caller_up_before():
    steps = executed(capture_log("dp_0_queue_that_does_not_exist_before"))
    log = capture_log("dp_0_queue_that_does_not_exist_before")
    assert "Unable to join queue 'nosuchqueue'" in log
    assert steps[-2:] == ["rawqueue@harness:4 NoOp(Queue returned: QUEUESTATUS=UNKNOWN)", "rawqueue@harness:5 Hangup()"]


def test_a_transfer_to_a_missing_queue_reaches_the_default_queue():
    log = capture_log("dp_c_transfer_to_missing_queue")
    steps = executed(log)
    assert "transfer@voicegw-after:1 Goto(voicegw-agents,orders,1)" in steps
    assert "voice gateway: no queue orders for" in log and "using support" in log
    assert "orders@voicegw-agents:9 Queue(support,t,,,600)" in steps
    assert "Unable to join queue" not in log
    agent = next(s for s in steps if s.startswith("agent@harness-agents:1"))
    assert "conversation 7d1c1d4e-7a57-4e0e-9d49-3e0c1a0b2c11" in agent  # the screen-pop key rode along
    assert "Hangup()" not in " ".join(s for s in steps if "voicegw-" in s.split()[0])


def test_a_redirect_to_a_missing_queue_takes_the_default_queue_in_the_callers_language():
    log = capture_log("agi_g_voicebot_redirected_by_ami")
    steps = executed(log)
    assert "orders@voicegw-agents:8 ExecIf(1?Set(VOICEGW_TARGET=support-es))" in steps
    assert "orders@voicegw-agents:9 Queue(support-es,t,,,600)" in steps
    assert any(s.startswith("agent@harness-agents:2 Answer") for s in steps)
    # the agent hanging up ends the call in the h extension, not in another queue
    assert steps[-1].startswith("h@voicegw-agents:1 NoOp(agents call ended")


@pytest.mark.parametrize("name, reason", [
    ("dp_a_agi_refused", "agi-FAILURE"),
    ("dp_b_status_busy", "busy"),
    ("dp_d_route_ended_without_status", "gateway-error"),
    ("dp_f_audiosocket_unreachable", "audiosocket-FAILED"),
    ("dp_g_ari_app_not_running", "ari-FAILED"),
    ("dp_h_status_error", "gateway-error"),
])
def test_when_the_gateway_cannot_serve_the_call_the_caller_reaches_the_agents(name, reason):
    steps = executed(capture_log(name))
    to_agents = next(s for s in steps if s.startswith("support@voicegw-agents:1 NoOp(to agents"))
    assert f"reason {reason} " in to_agents
    assert "support@voicegw-agents:9 Queue(support,t,,,600)" in steps
    assert any(s.startswith("agent@harness-agents:2 Answer") for s in steps)
    gateway_steps = [s for s in steps if "@voicegw-" in s.split()[0] and not s.startswith("h@")]
    assert not any("Hangup()" in s for s in gateway_steps)


def test_a_completed_journey_hangs_up():
    steps = executed(capture_log("dp_e_completed"))
    assert steps[-2:] == ["s@voicegw-after:2 Goto(completed,1)", "completed@voicegw-after:1 Hangup()"]


def test_queues_are_every_queue_the_journeys_transfer_to(tmp_path):
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    plan = queue_plan(settings)
    assert plan.queues == ("support", "billing", "lending", "orders", "scheduling", "security")
    assert "order_status" in plan.used_by["orders"] and "journeys.agent_queue" in plan.used_by["support"]
    text = render_queues(plan)
    for queue in plan.queues:
        assert f"\n[{queue}](voicegw-queue)" in text and f"\n[{queue}-es](voicegw-queue)" in text
    # the recorded PBX loaded this file's template and sections (cut to three queues, members added)
    recorded = fixtures.raw_path("captures/conf/queues_voicegw.conf").read_text(encoding="utf-8")
    assert recorded.startswith(text.split("[support](voicegw-queue)")[0])


def test_queues_follow_the_journey_files_not_a_list(tmp_path):
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    source = Path(load_settings(environ={}).project_path("config/journeys"))
    for path in source.glob("*.yaml"):
        (journeys / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (journeys / "claims.yaml").write_text(
        "journey: claims\nqueue: claims desk\nsteps:\n  - id: start\n    say: Hello.\n"
        "  - id: hand\n    transfer: fraud\n", encoding="utf-8")
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "journeys": {"directory": str(journeys), "agent_queue": "helpdesk"},
        "asterisk": {"queue_languages": ["fr", "de"]}})
    plan = queue_plan(settings)
    assert plan.default == "helpdesk" and plan.queues[0] == "helpdesk"
    assert "claims-desk" in plan.queues and "fraud" in plan.queues  # a dialplan-safe name, as the transfer sends it
    assert "claims-desk-fr" in plan.variants and "fraud-de" in plan.variants
    assert "VOICEGW_DEFAULT_QUEUE=helpdesk " in render_dialplan(settings)


def test_asterisk_dialplan_writes_both_files(tmp_path):
    out = tmp_path / "etc"
    out.mkdir()
    assert voicegw(["--config", str(_config(tmp_path)), "asterisk-dialplan", "--host", "10.0.0.5",
                                 "--write", str(out)]) == 0
    dialplan = (out / "extensions_voicegw.conf").read_text()
    assert "\nVOICEGW_AGI=agi://10.0.0.5:4573 " in dialplan and "\nVOICEGW_DEFAULT_QUEUE=support " in dialplan
    assert "[orders](voicegw-queue)" in (out / "queues_voicegw.conf").read_text()


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"data_dir: {tmp_path}\n", encoding="utf-8")
    return path


def test_the_real_gateway_against_asterisk():
    """What ``voicegw serve`` did in Asterisk 22.10.1 (captures/README.md, ``e2e_*``)."""
    keypad = capture_log("e2e_keypad_zero_during_greeting")
    agi = [line.split("AGI ", 1)[1] for line in keypad.splitlines() if "AGI Rx <<" in line or "AGI Tx >> 2" in line]
    pressed = agi.index("Tx >> 200 result=48 endpos=6880")  # 0 stopped the greeting
    assert agi[pressed - 1].startswith("Rx << STREAM FILE ")
    assert not any(line.startswith("Rx << GET DATA") for line in agi)  # and answered the question
    assert "VOICEGW_STATUS=transfer AGISTATUS=SUCCESS queue support" in keypad
    no_audio = capture_log("e2e_voicebot_caller_leg_sends_no_audio")
    assert "Rx << SET VARIABLE VOICEGW_STATUS error" in no_audio and "reason gateway-timeout" in no_audio
    assert 'Queue("Local/700@voicegw-inbound' in no_audio
    redirected = capture_log("e2e_voicebot_silent_caller_redirected_by_ami")
    assert "Rx << SET VARIABLE VOICEGW_STATUS transferred" in redirected
    assert "voicegw-after" not in redirected  # AMI took the call to the agents: the dialplan never had to
    assert 'Queue("Local/700@voicegw-inbound' in redirected
