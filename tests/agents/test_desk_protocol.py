"""The desktop and supervisor frames, sans-IO: what is accepted, and the clear refusal of the rest."""

from __future__ import annotations

import pytest

from gateway.agents.desk_protocol import (Accept, Close, DeskProtocolError, FollowUp, GiveBack, Ready, Send, SteerCmd,
                                          TakeOverCmd, Watch, parse_desk_frame, parse_supervisor_frame)

CID = "0123456789abcdef0123456789abcdef"


def desk(raw: str):
    return parse_desk_frame(raw, max_message_chars=20)


def test_desk_frames():
    assert desk('{"type":"ready","skills":["Billing"],"languages":["en"]}') == Ready(frozenset({"billing"}),
                                                                                     frozenset({"en"}), True)
    assert desk(f'{{"type":"accept","conversation_id":"{CID}"}}') == Accept(CID)
    assert desk(f'{{"type":"send","conversation_id":"{CID}","text":"hi","id":"d-1"}}') == Send(CID, "hi", "d-1")
    assert desk(f'{{"type":"follow_up","conversation_id":"{CID}","via":"sms"}}') == FollowUp(CID, "sms", "")
    assert desk(f'{{"type":"hand_back","conversation_id":"{CID}","journey":"welcome"}}') == GiveBack(CID, "welcome", "")
    assert desk(f'{{"type":"close","conversation_id":"{CID}","code":"resolved"}}') == Close(CID, "resolved", "")


@pytest.mark.parametrize("raw, message", [
    ("nope", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"type":"take_over","conversation_id":"x"}', "type must be one of"),
    ('{"type":"accept"}', "conversation_id must be a short id"),
    ('{"type":"accept","conversation_id":"../../etc"}', "conversation_id must be a short id"),
    ('{"type":"accept","conversation_id":"x","admin":true}', "unexpected field(s): admin"),
    ('{"type":"send","conversation_id":"x","text":"' + "y" * 21 + '"}', "text is 21 characters; the limit is 20"),
    ('{"type":"send","conversation_id":"x","text":"   "}', "text is empty"),
    ('{"type":"send","conversation_id":"x","text":"hi","id":"a b"}', "id must be a short id"),
    ('{"type":"follow_up","conversation_id":"x","via":"fax"}', "via must be sms or link"),
    ('{"type":"follow_up","conversation_id":"x","via":"link"}', "purpose must be a short id"),
    ('{"type":"ready","skills":"all"}', "expected a list of strings"),
])
def test_bad_desk_frames_are_refused_clearly(raw, message):
    with pytest.raises(DeskProtocolError) as info:
        desk(raw)
    assert message in str(info.value)


def test_supervisor_frames():
    sup = lambda raw: parse_supervisor_frame(raw, max_message_chars=20)  # noqa: E731
    assert sup(f'{{"type":"watch","conversation_id":"{CID}"}}') == Watch(CID)
    assert sup(f'{{"type":"take_over","conversation_id":"{CID}"}}') == TakeOverCmd(CID, "")
    assert sup(f'{{"type":"steer","conversation_id":"{CID}","instruction":"end"}}') == SteerCmd(CID, "end", "")
    with pytest.raises(DeskProtocolError, match="instruction must be"):
        sup(f'{{"type":"steer","conversation_id":"{CID}","instruction":"say","step":"x"}}')
    with pytest.raises(DeskProtocolError, match="step must be"):
        sup(f'{{"type":"steer","conversation_id":"{CID}","instruction":"goto"}}')
    with pytest.raises(DeskProtocolError, match="type must be one of"):
        sup(f'{{"type":"send","conversation_id":"{CID}","text":"hi"}}')
