"""At a closed-set step (digits, yes/no) the core takes only an answer: other speech re-asks and
never looks anything up; global intents are heard even said with an answer. Real core, real NLU,
real sample CRM, on what the recognizer now hands over for out-of-grammar speech."""

from __future__ import annotations

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.actions import Ask, Say, Transfer
from gateway.core.events import CallStarted, RecognitionFailed, UserSaid


async def _order_number_step(tmp_path):
    core = await build_core(load_settings(environ={}, overrides={"data_dir": str(tmp_path)}))
    opened = await core.open("voice", caller_id="", event=CallStarted(caller_id="", channel="voice"))

    async def say(text: str):
        return await core.handle(opened.conversation_id, UserSaid(text, confidence=0.9), session_id=opened.session_id)

    acts = await say("where is my order")
    assert [a for a in acts if isinstance(a, Ask)][-1].expect.kind == "digits"
    return core, opened, say


def _texts(actions) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))


async def test_other_speech_at_the_order_number_re_asks_and_looks_nothing_up(tmp_path):
    core, opened, say = await _order_number_step(tmp_path)
    try:
        for other in ("I don't have it with me.", "Hello?"):
            acts = await say(other)
            asks = [a for a in acts if isinstance(a, Ask)]
            assert asks and asks[-1].expect.kind == "digits", (other, acts)  # asked again
            assert "couldn't find an order" not in _texts(acts)
        # a rejected recognition counts the same; the third miss goes to people, still with no lookup
        acts = await core.handle(opened.conversation_id, RecognitionFailed(reason="nothing recognized"),
                                 session_id=opened.session_id)
        transfers = [a for a in acts if isinstance(a, Transfer)]
        assert transfers and transfers[0].queue == "orders" and "couldn't find an order" not in _texts(acts)
        record = await core.store.get(opened.conversation_id)
        assert "order_id" not in record.slots
    finally:
        await core.store.close()


async def test_global_intents_are_heard_at_closed_steps_even_beside_an_answer(tmp_path):
    core, opened, say = await _order_number_step(tmp_path)
    try:
        acts = await say("2 0 0 0 1")  # a known order: "Would you like me to text you the tracking link?"
        assert [a for a in acts if isinstance(a, Ask)][-1].expect.kind == "yesno"
        acts = await say("No, I want to speak to an agent.")
        transfers = [a for a in acts if isinstance(a, Transfer)]
        assert transfers and transfers[0].reason == "customer asked for an agent"
        record = await core.store.get(opened.conversation_id)
        assert "wants_tracking" not in record.slots  # not taken as "no"
    finally:
        await core.store.close()


async def test_a_bare_answer_that_sounds_like_go_back_is_still_the_answer(tmp_path):
    core, opened, say = await _order_number_step(tmp_path)
    try:
        await say("2 0 0 0 1")
        await say("wrong")  # "wrong" scores 0.78 on go_back, yet it answers the yes/no question: no
        record = await core.store.get(opened.conversation_id)
        assert record.slots.get("wants_tracking") == "no"
    finally:
        await core.store.close()
