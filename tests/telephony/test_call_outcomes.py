"""What became of a call the gateway placed through Asterisk reaches its conversation.

The real core (``build_core``, SQLite in tmp_path) places a call (the reminder escalation,
``CallAccepted(channel="outreach")``); the AMI client carries the ``Originate`` to a fake
Asterisk replaying the recorded session of ``ami_c_originate_local_events`` over a real socket,
whose ``OriginateResponse`` is replaced by the failure Asterisk documents for a call that was
not answered (``Response: Failure``, ``Reason: 3|5|8|0``, as manager.c writes it). The core must
log ``CallFailed`` with the matching reason, and nothing when the call was answered.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.actions import Originate
from gateway.core.events import CallAccepted, CallStarted
from gateway.telephony.ami import AmiClient
from gateway.telephony.call_outcomes import report_to_core, sip_outcome
from tests.telephony import fixtures
from tests.telephony.fake_ami import ReplayAmi
from tests.telephony.helpers import until

EMMA, EMMA_ID = "+15556667777", "C005"  # sample CRM: the number on file the core calls
RECORDED = "ami/ami_c_originate_local_events"
ACTION_ID = b"action/e51a4cca-92f2-42df-8493-1d699655ee11/1/2"


def failed_originate(reason: str) -> list[fixtures.Chunk]:
    """The recorded session up to "Originate successfully queued" and the two Newchannel events,
    then Asterisk's OriginateResponse for a call that was not answered, then the Logoff."""
    chunks = fixtures.load(RECORDED)
    event = (b"Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: " + ACTION_ID + b"\r\n"
             b"Response: Failure\r\nChannel: Local/+15556667777@test\r\nContext: voicegw-outbound\r\n"
             b"Exten: s\r\nReason: " + reason.encode() + b"\r\nUniqueid: <null>\r\n"
             b"CallerIDNum: <unknown>\r\nCallerIDName: <unknown>\r\n\r\n")
    built = dataclasses.replace(chunks[8], data=event)
    return chunks[:7] + [built] + chunks[13:]


def settings_for(tmp_path, port):
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path),
        "ami": {"enabled": True, "port": port, "secret": "gatewaysecret", "outbound_channel": "Local/{number}@test",
                "outbound_context": "voicegw-outbound"}})


async def place_reminder_call(tmp_path, chunks):
    """A reminder conversation of Emma's escalated to a call over AMI; returns (core, events)."""
    fake = ReplayAmi(chunks)
    settings = settings_for(tmp_path, await fake.start())
    core = await build_core(settings)
    client = AmiClient(settings)
    core.register_sink(Originate, client.originate_sink)
    client.call_failed_callbacks.append(report_to_core(core))
    try:
        await client.start(wait=5)
        opened = await core.open("sms", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                                 event=CallStarted(channel="sms", caller_id=EMMA, outbound=True))
        cid = opened.conversation_id
        actions = await core.handle(cid, CallAccepted(channel="outreach"))
        assert [a.number for a in actions if isinstance(a, Originate)] == [EMMA]
        await until(lambda: "Originate" in fake.names())
        await asyncio.sleep(0.3)  # the OriginateResponse arrives; a failure is reported in the background
        await until(lambda: not any(t.get_name().startswith("outcome-") for t in asyncio.all_tasks()))
        events = await core.store.events(cid)
    finally:
        await client.close()
        await fake.close()
        await core.close()
    return events


@pytest.mark.parametrize("reason,expected", [("3", "no_answer"), ("5", "busy"), ("8", "congestion"),
                                             ("0", "failed"), ("1", "failed")])
async def test_a_call_not_answered_reaches_the_conversation(tmp_path, reason, expected):
    events = await place_reminder_call(tmp_path, failed_originate(reason))
    failed = [e for e in events if e.kind == "CallFailed"]
    assert [(e.payload["reason"], e.payload["detail"], e.channel) for e in failed] == [
        (expected, f"reason {reason}", "telephony")]
    assert events.index(failed[0]) > [e.kind for e in events].index("Originate")


async def test_an_answered_call_reports_no_failure(tmp_path):
    events = await place_reminder_call(tmp_path, fixtures.load(RECORDED))  # the recorded Reason 4
    assert "Originate" in [e.kind for e in events]
    assert not [e for e in events if e.kind == "CallFailed"]


async def test_ami_down_reports_the_call_failed(tmp_path):
    settings = settings_for(tmp_path, 1)  # nothing listens
    core = await build_core(settings)
    client = AmiClient(settings, initial_backoff=0.05)
    core.register_sink(Originate, client.originate_sink)
    client.call_failed_callbacks.append(report_to_core(core))
    try:
        await client.start()
        opened = await core.open("sms", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                                 event=CallStarted(channel="sms", caller_id=EMMA, outbound=True))
        await core.handle(opened.conversation_id, CallAccepted(channel="outreach"))

        async def failed():
            return [e for e in await core.store.events(opened.conversation_id) if e.kind == "CallFailed"]

        for _ in range(100):
            if await failed():
                break
            await asyncio.sleep(0.05)
        assert [e.payload["reason"] for e in await failed()] == ["failed"]
        context = await core.context(opened.conversation_id)
        assert any(line["text"] == "CallFailed (failed)" for line in context["transcript"])
    finally:
        await client.close()
        await core.close()


@pytest.mark.parametrize("error,reason", [
    ("call not answered: 486 Busy Here", "busy"),
    ("call not answered: 600 Busy Everywhere", "busy"),
    ("call not answered: 603 Decline", "busy"),
    ("call not answered: 480 Temporarily Unavailable", "no_answer"),
    ("call not answered: 487 Request Terminated", "no_answer"),
    ("call to sip:+15556667777@pbx not answered within 60 s", "no_answer"),
    ("call not answered: 503 Service Unavailable", "congestion"),
    ("call not answered: 404 Not Found", "failed"),
    ("SIP worker 2 is gone", "failed"),
])
def test_sip_final_responses_map_to_reasons(error, reason):
    assert sip_outcome(error).reason == reason and not sip_outcome(error)
