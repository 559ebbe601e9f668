"""AMI client (panoramisk) against a fake Asterisk replaying recorded sessions byte for byte."""

from __future__ import annotations

import logging
import uuid

import pytest

from gateway.config import load_settings
from gateway.core.actions import Originate, Transfer
from gateway.limits import SessionCap
from gateway.telephony.ami import AmiCallControl, AmiClient, AmiError
from gateway.telephony.audiosocket_server import AudioSocketCall
from gateway.telephony.calls import CallRecord, CallRegistry
from tests.telephony import fixtures
from tests.telephony.fake_ami import ReplayAmi, exchanges
from tests.telephony.helpers import until

PARK = "Local/park@fixtures-ami-00000017;2"


def ami_settings(tmp_path, port, **ami):
    cfg = {"enabled": True, "port": port, "secret": "gatewaysecret", "outbound_channel": "Local/{number}@test",
           "outbound_context": "voicegw-outbound", "agent_context": "voicegw-agents", **ami}
    return load_settings(environ={}, overrides={"data_dir": str(tmp_path), "ami": cfg})


def recorded_action(name: str, action: str) -> dict:
    return next(e.action for e in exchanges(fixtures.load(f"ami/{name}"))[1] if e.name == action.lower())


async def test_login_originate_logoff_against_recorded_session(tmp_path):
    fake = ReplayAmi(fixtures.load("ami/ami_c_originate_local_events"))
    port = await fake.start()
    client = AmiClient(ami_settings(tmp_path, port))
    try:
        await client.start(wait=5)
        assert client.connected and client.logins == 1
        conv = str(uuid.uuid4())
        answered = await client.originate("100", conv, caller_id='"AMI Fixture" <5550100>', ring_seconds=10)
        assert answered  # the OriginateResponse event (Reason 4) with our ActionID came back
    finally:
        await client.close()
        await fake.close()
    assert fake.names() == ["Login", "Originate", "Logoff"]
    login, originate = fake.received[0], fake.received[1]
    # the same shape Asterisk accepted from panoramisk in the recording
    assert set(login) == set(recorded_action("ami_c_originate_local_events", "Login"))
    assert login["events"] == ["on"] and login["username"] == ["gateway"]
    rec = recorded_action("ami_c_originate_local_events", "Originate")
    assert {"async", "callerid", "channel", "timeout", "variable", "actionid"} <= set(originate) & set(rec)
    assert originate["async"] == rec["async"] == ["true"]
    assert originate["channel"] == ["Local/100@test"] and originate["timeout"] == ["10000"]
    assert originate["context"] == ["voicegw-outbound"] and originate["exten"] == ["s"]
    assert originate["variable"] == [f"VOICEGW_CONVERSATION={conv}", "VOICEGW_OUTBOUND=1"]
    assert not fake.unmatched


async def test_originate_refuses_a_non_number(tmp_path):
    fake = ReplayAmi(fixtures.load("ami/ami_c_originate_local_events"))
    client = AmiClient(ami_settings(tmp_path, await fake.start()))
    try:
        await client.start(wait=5)
        with pytest.raises(AmiError, match="not a phone number"):
            await client.originate("100@evil/x", "c1")
    finally:
        await client.close()
        await fake.close()


async def test_variables_transfer_and_screen_pop_to_the_agent_who_answers(tmp_path):
    fake = ReplayAmi(fixtures.load("ami/ami_d_setvar_getvar_redirect_queue"))
    port = await fake.start()
    calls = CallRegistry()
    client = AmiClient(ami_settings(tmp_path, port, agent_context="fixtures-queue"), calls)
    popped: list[tuple[str, str]] = []

    async def screen_pop(conversation_id: str, interface: str) -> None:
        popped.append((conversation_id, interface))

    client.agent_callbacks.append(screen_pop)
    rung: list[tuple[str, str]] = []

    async def ringing(conversation_id: str, interface: str) -> None:
        rung.append((conversation_id, interface))

    client.agent_called_callbacks.append(ringing)
    try:
        await client.start(wait=5)
        result = await client.action({"Action": "Originate", "Channel": "Local/park@fixtures-ami", "Application": "Wait",
                                      "Data": "40", "Async": "true", "Timeout": "10000",
                                      "CallerID": '"Queue Caller" <5550200>'})
        assert result[-1]["Event"] == "OriginateResponse"
        await client.set_variable(PARK, "GWVAR", "set via AMI")
        assert await client.get_variable(PARK, "GWVAR") == "set via AMI"
        assert await client.get_variable(PARK, "NOSUCHVAR") == ""  # empty Value: (dropped by panoramisk)
        assert await client.get_variable(PARK, "CHANNEL(state)") == "Up"
        with pytest.raises(AmiError, match="No such channel"):
            await client.get_variable("Local/nosuch@x-00000000;1", "X")
        # the AudioSocket call that the voicebot route registered for this channel
        conv = str(uuid.uuid4())
        calls.add(CallRecord(call_uuid=conv, conversation_id=conv, channel=PARK, caller_id="5550200"))
        call = AudioSocketCall(conv, conv, 8000, calls.by_uuid(conv))
        control = AmiCallControl(client, calls, call)
        ok = await control.transfer(conv, Transfer(queue="caller", skills=("billing", "fr"), language="en"))
        assert ok
        await until(lambda: popped)
    finally:
        await client.close()
        await fake.close()
    assert popped == [(conv, "Local/agent@fixtures-agents/n")]
    assert rung == [(conv, "Local/agent@fixtures-agents/n")]  # AgentCalled: the queue rang that member first
    names = fake.names()
    assert names[:7] == ["Login", "Originate", "Setvar", "Getvar", "Getvar", "Getvar", "Getvar"]
    assert names[7:] == ["Setvar"] * 5 + ["Redirect", "Logoff"]
    setvars = {a["variable"][0]: a["value"][0] for a in fake.received[7:12]}
    assert setvars == {"__VOICEGW_CONVERSATION": conv, "VOICEGW_QUEUE": "caller",
                       "VOICEGW_SKILLS": "billing,fr", "VOICEGW_LANGUAGE": "en", "VOICEGW_STATUS": "transferred"}
    assert all(a["channel"] == [PARK] for a in fake.received[7:13])
    assert calls.by_uuid(conv).redirected  # the voicebot route will say "transferred", not "hangup"
    redirect = fake.received[12]
    assert set(redirect) == set(recorded_action("ami_d_setvar_getvar_redirect_queue", "Redirect"))
    assert redirect["context"] == ["fixtures-queue"] and redirect["exten"] == ["caller"]
    assert redirect["priority"] == ["1"]


async def test_reconnects_with_backoff_when_ami_drops(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.telephony.ami")
    fake = ReplayAmi(fixtures.load("ami/ami_c_originate_local_events"), drop_after_login=True)
    port = await fake.start()
    client = AmiClient(ami_settings(tmp_path, port), initial_backoff=0.1)
    try:
        await client.start()
        await until(lambda: client.logins >= 2 and client.connected)
        assert fake.connections == 2
        assert await client.originate("100", "conv-after-reconnect", ring_seconds=10)
    finally:
        await client.close()
        await fake.close()
    assert "AMI connection to 127.0.0.1:%d lost" % port in caplog.text


async def test_refused_login_is_retried_and_never_marks_connected(tmp_path, caplog):
    fake = ReplayAmi(fixtures.load("ami/ami_b2_action_before_login"))
    port = await fake.start()
    client = AmiClient(ami_settings(tmp_path, port, secret="x", username="nosuchuser"), initial_backoff=0.05)
    try:
        await client.start()
        await until(lambda: fake.connections >= 3, timeout=15)
        assert not client.connected and client.logins == 0
        with pytest.raises(AmiError, match="not connected"):
            await client.set_variable("PJSIP/x", "A", "b")
    finally:
        await client.close()
        await fake.close()
    assert "AMI login as 'nosuchuser' refused" in caplog.text


async def test_originate_sink_and_unreachable_ami(tmp_path, caplog):
    # nothing listens: the client keeps retrying in the background; the sink logs and returns
    client = AmiClient(ami_settings(tmp_path, 1), initial_backoff=0.05)
    try:
        await client.start()
        await until(lambda: client.connect_failures >= 2)
        await client.originate_sink("c1", Originate(number="5551234"))
    finally:
        await client.close()
    assert "outbound call to 5551234 failed: AMI not connected" in caplog.text


async def test_asterisk_errors_become_clear_ami_errors(tmp_path):
    fake = ReplayAmi(fixtures.load("ami/ami_a_login_ok_errors_logoff"),
                     extra=fixtures.load("ami/ami_c_originate_local_events"))
    client = AmiClient(ami_settings(tmp_path, await fake.start()))
    try:
        await client.start(wait=5)
        with pytest.raises(AmiError, match="Setvar failed: No such channel"):
            await client.set_variable("PJSIP/nosuch-00000000", "X", "1")
        with pytest.raises(AmiError, match="Hangup failed: No such channel"):
            await client.hangup("PJSIP/nosuch-00000000")
        pong = await client.action({"Action": "Ping"})
        assert pong.get("Ping") == "Pong"
    finally:
        await client.close()
        await fake.close()
    assert fake.names() == ["Login", "Setvar", "Hangup", "Ping", "Logoff"]


async def test_no_call_is_placed_while_the_node_holds_its_most_calls(tmp_path, caplog):
    """The call would come back over AudioSocket only to be refused once the customer answered:
    with the node's ``voice.max_calls`` reached, no Originate is sent and the call is reported failed."""
    fake = ReplayAmi(fixtures.load("ami/ami_c_originate_local_events"))
    node = SessionCap("voice", 1, setting="voice.max_calls")
    assert node.admit()  # one call in progress: the node is full
    client = AmiClient(ami_settings(tmp_path, await fake.start()), node=node)
    failed: list[tuple[str, str, str]] = []

    async def report(conversation_id: str, reason: str, detail: str) -> None:
        failed.append((conversation_id, reason, detail))

    client.call_failed_callbacks.append(report)
    try:
        await client.start(wait=5)
        await client.originate_sink("c1", Originate(number="5551234"))
        await until(lambda: failed)
        assert failed == [("c1", "failed", "1 calls in progress (voice.max_calls); Originate not sent")]
        assert "outbound call to 5551234 failed: 1 calls in progress (voice.max_calls)" in caplog.text
    finally:
        await client.close()
        await fake.close()
    assert "Originate" not in fake.names()
