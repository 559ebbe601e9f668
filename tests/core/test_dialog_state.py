"""The typed dialog state on the real core: a conversation stored by an older version (the state as
string keys) goes on where it stood, and what the core writes back is what that version wrote."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.actions import Ask, Say, Transfer
from gateway.core.channels import Channel, Wording
from gateway.core.dialog_state import Frame
from gateway.core.events import ChatMessage, ChatStarted
from gateway.core.journeys import Prompt


@pytest.fixture
async def core(tmp_path: Path):
    core = await build_core(load_settings(environ={}, overrides={"data_dir": str(tmp_path)}))
    yield core
    await core.close()


def _store_the_old_way(tmp_path: Path, cid: str, **fields: object) -> None:
    db = tmp_path / "conversations.db"
    with sqlite3.connect(db) as conn:
        record = json.loads(conn.execute("SELECT record FROM conversations WHERE id = ?", (cid,)).fetchone()[0])
        record.update(fields)
        conn.execute("UPDATE conversations SET record = ? WHERE id = ?", (json.dumps(record), cid))


async def test_an_old_record_goes_on_with_its_retries_and_history(core, tmp_path: Path) -> None:
    opened = await core.open("chat", event=ChatStarted())
    cid, sid = opened.conversation_id, opened.session_id
    # stored by the version before the typed state: two failed answers already, one step answered
    _store_the_old_way(tmp_path, cid, journey="order_status", step="ask_order",
                       state={"retries": {"no_match": 2}, "history": [["welcome", "route"]],
                              "stack": [], "intent": "order_status", "last_text": "where is my order"})
    record = await core.store.get(cid)
    assert record.state.history == [Frame("welcome", "route")] and record.state.retries.no_match == 2
    actions = await core.handle(cid, ChatMessage("purple elephants"), session_id=sid)
    # the third failure in the step (max_no_match 3) hands over: the two stored ones counted
    transfer = [a for a in actions if isinstance(a, Transfer)]
    assert transfer and transfer[0].reason == "repeated no-match"
    with sqlite3.connect(tmp_path / "conversations.db") as conn:
        stored = json.loads(conn.execute("SELECT record FROM conversations WHERE id = ?", (cid,)).fetchone()[0])
    state = stored["state"]
    # written back with the keys the old version used, and without the raw text
    assert state["intent"] == "order_status" and state["history"] == [["welcome", "route"]]
    assert state["retries"] == {"no_match": 3}
    assert set(state["transfer"]) == {"queue", "reason", "at", "channel"} and state["transfer"]["channel"] == "chat"
    assert "last_text" not in state


async def test_go_back_returns_to_an_answered_step_stored_the_old_way(core, tmp_path: Path) -> None:
    opened = await core.open("chat", event=ChatStarted())
    cid, sid = opened.conversation_id, opened.session_id
    _store_the_old_way(tmp_path, cid, journey="order_status", step="offer_sms",
                       slots={"order_id": "20001"},
                       state={"history": [["order_status", "ask_order"]], "stack": []})
    actions = await core.handle(cid, ChatMessage("go back"), session_id=sid)
    said = " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))
    assert "go back" in said and "What is your order number?" in said
    record = await core.store.get(cid)
    assert record.step == "ask_order" and "order_id" not in record.slots and record.state.history == []


def test_channels_are_an_enum_and_pick_the_wording() -> None:
    prompt = Prompt(text="plain", voice="spoken", chat="typed")
    assert prompt.for_channel(Channel.VOICE) == "spoken" and prompt.for_channel(Channel.WEB) == "typed"
    assert prompt.for_channel(Channel.SMS) == "plain" and prompt.for_channel(Channel.OUTREACH) == "plain"
    assert prompt.for_channel("chat") == "typed"  # a channel's own name is read the same way
    assert Channel.of("sip") is Channel.VOICE and Channel.of("fax") is Channel.UNKNOWN
    assert Channel.of("web").wording is Wording.CHAT and Channel.WEB.is_typed and not Channel.SMS.is_typed
    assert Channel.SMS.branch_value == "sms" and Channel.OUTREACH.branch_value == "outreach"
    assert Channel.BOT.is_staff and not Channel.CHAT.is_staff
    assert json.dumps({"channel": Channel.VOICE}) == '{"channel": "voice"}'  # stored as its name
