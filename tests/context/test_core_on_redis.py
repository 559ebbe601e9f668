"""Two gateway nodes sharing one Redis context store, through the real conversation core:
a journey started in a web chat on one node continues in a phone call on the other."""

from __future__ import annotations

from pathlib import Path

from gateway.app import build_core
from gateway.config import load_settings
from gateway.context.redis_store import RedisStore
from gateway.core.actions import Ask, Say, SendFollowUp
from gateway.core.events import CallStarted, ChatMessage, ChatStarted, DtmfPressed, UserSaid
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)


def _texts(actions: list) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))


async def test_a_chat_on_one_node_resumes_as_a_call_on_another(redis_url: str, tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "context": {"backend": "redis", "redis_url": redis_url}})
    node_a, node_b = await build_core(settings), await build_core(settings)
    try:
        assert isinstance(node_a.store, RedisStore) and isinstance(node_b.store, RedisStore)
        opened = await node_a.open("chat", event=ChatStarted())
        cid, chat = opened.conversation_id, opened.session_id
        await node_a.handle(cid, ChatMessage("I started a loan application and got stuck"), session_id=chat)
        await node_a.handle(cid, ChatMessage("my account number is 11223344"), session_id=chat)
        acts = await node_a.handle(cid, ChatMessage("30/11/1978"), session_id=chat)
        assert "proof of income" in _texts(acts)

        # the caller ID brings the journey's place to the other node, not the chat's verification
        call = await node_b.open("voice", caller_id="+15552223333", event=CallStarted(caller_id="+15552223333"))
        assert call.resumed and call.conversation_id == cid
        assert "already verified" not in _texts(call.actions) and "account number" not in _texts(call.actions)
        await node_b.handle(cid, UserSaid("my PIN", confidence=0.9), session_id=call.session_id)
        for digit in "2468":
            acts = await node_b.handle(cid, DtmfPressed(digit), session_id=call.session_id)
        assert "you're verified" in _texts(acts) and "text message" in _texts(acts)
        acts = await node_b.handle(cid, UserSaid("yes please", confidence=0.9), session_id=call.session_id)
        assert any(isinstance(a, SendFollowUp) for a in acts)

        context = await node_a.context(cid)  # either node sees the whole conversation
        assert context["channels"] == ["chat", "voice"]
        assert "identity" in context["verified"]
        log = await node_a.store.events(cid)
        assert {e.channel for e in log} >= {"chat", "voice", "bot"}
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
    finally:
        await node_a.store.close()
        await node_b.store.close()


async def test_a_call_opened_while_the_other_node_saves_the_conversation_is_opened_on_its_newer_copy(
        redis_url: str, tmp_path: Path) -> None:
    """Node B opens the caller's conversation; between its read and its save, node A saves the
    chat's next message. B's save is refused (the stored copy is newer) and B opens the call again
    on the newer copy: the call is answered, and neither node's change is lost."""
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "context": {"backend": "redis", "redis_url": redis_url}})
    node_a, node_b = await build_core(settings), await build_core(settings)
    try:
        opened = await node_a.open("chat", event=ChatStarted())
        cid, chat = opened.conversation_id, opened.session_id
        for text in ("I started a loan application and got stuck", "my account number is 11223344", "30/11/1978"):
            await node_a.handle(cid, ChatMessage(text), session_id=chat)
        read = node_b.store.get
        raced: list[list] = []

        async def read_then_race(conversation_id: str):  # node A saves right after node B has read
            record = await read(conversation_id)
            if not raced:
                raced.append(await node_a.handle(cid, ChatMessage("are you still there?"), session_id=chat))
            return record

        node_b.store.get = read_then_race  # type: ignore[method-assign]
        call = await node_b.open("voice", caller_id="+15552223333", event=CallStarted(caller_id="+15552223333"))
        assert raced and call.resumed and call.conversation_id == cid
        assert _texts(call.actions)  # the caller hears the journey
        record = await node_a.store.get(cid)
        assert record is not None and record.channels == ["chat", "voice"]
        log = await node_a.store.events(cid)
        said = [e.payload.get("text") for e in log if e.kind == "ChatMessage"]
        assert said[-1] == "are you still there?"
        assert [e.kind for e in log].count("CallStarted") == 1  # the call's arrival is logged once
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
    finally:
        await node_a.store.close()
        await node_b.store.close()
