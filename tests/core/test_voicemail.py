"""A call the gateway placed that reaches an answering machine, through the real core: the
journey's message is left after the beep, naming nobody's appointment, and the call ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.actions import Ask, Hangup, Originate, Say
from gateway.core.events import AnsweringMachine, CallAccepted, CallStarted

EMMA, EMMA_ID = "+15556667777", "C005"  # sample CRM: a device pickup at the Riverside store


@pytest.fixture
async def core(tmp_path: Path):
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path),
                                                    "compliance": {"organisation": "Riverside Services"}})
    core = await build_core(settings)
    placed: list[Originate] = []

    async def telephony(cid, action):
        placed.append(action)

    core.register_sink(Originate, telephony)
    core.placed = placed  # type: ignore[attr-defined]
    yield core
    await core.close()


async def _answered_reminder_call(core):
    thread = await core.open("sms", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                             event=CallStarted(channel="sms", caller_id=EMMA, outbound=True))
    await core.handle(thread.conversation_id, CallAccepted(channel="outreach"))
    call = await core.open("voice", conversation_id=thread.conversation_id, callback=core.placed[-1].callback,
                           event=CallStarted(caller_id=EMMA, outbound=True))
    return call


def _texts(actions) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))


async def test_a_machine_gets_the_journeys_message_and_nothing_private(core):
    call = await _answered_reminder_call(core)
    assert "device pickup" in _texts(call.actions)  # what a person would have heard
    acts = await core.handle(call.conversation_id, AnsweringMachine("machine", seconds=2.1, reason="beep", beep=True),
                             session_id=call.session_id)
    said = _texts(acts)
    assert "Hello Emma, this is Riverside Services" in said and "appointment" in said
    assert "device pickup" not in said and "Riverside store" not in said  # nothing a household should not hear
    assert isinstance(acts[-1], Hangup) and acts[-1].reason == "voicemail"
    logged = [(e.kind, e.payload.get("verdict")) for e in await core.store.events(call.conversation_id)]
    assert ("AnsweringMachine", "machine") in logged  # the outcome campaigns and reports read


async def test_a_person_hears_the_journey_and_the_verdict_is_logged(core):
    call = await _answered_reminder_call(core)
    acts = await core.handle(call.conversation_id, AnsweringMachine("human", seconds=1.6),
                             session_id=call.session_id)
    assert acts == []
    logged = [(e.kind, e.payload.get("verdict")) for e in await core.store.events(call.conversation_id)]
    assert ("AnsweringMachine", "human") in logged
