"""The intent classifier and the Nlu facade, trained on the gateway's own journey examples."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import yaml

from gateway.core.nlu import IntentClassifier, IntentResult, Nlu, NluResult

INTENTS_FILE = Path(__file__).resolve().parents[2] / "config" / "journeys" / "intents.yaml"


def _journey_examples() -> dict[str, list[str]]:
    data = yaml.safe_load(INTENTS_FILE.read_text(encoding="utf-8"))
    return {name: list(body["examples"]) for name, body in data["intents"].items()}


@pytest.fixture(scope="module")
def examples() -> dict[str, list[str]]:
    return _journey_examples()


@pytest.fixture(scope="module")
def nlu(examples: dict[str, list[str]]) -> Nlu:
    return Nlu(examples, threshold=0.45)


@pytest.fixture()
def classifier(nlu: Nlu) -> IntentClassifier:
    nlu.classifier.threshold = 0.45
    return nlu.classifier


def test_intents_file_covers_every_intent_the_journeys_use(examples: dict[str, list[str]]) -> None:
    required = {"agent", "repeat", "go_back", "goodbye", "help", "order_status", "billing_dispute",
                "password_reset", "loan_resume", "appointment", "delivery", "reschedule", "cancel",
                "greet", "thanks"}
    assert required <= set(examples)
    assert all(len(examples[name]) >= 15 for name in required)
    assert not {"affirm", "deny"} & set(examples)  # yes/no is an entity, not an intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        # none of these is an example; several carry recognition errors
        ("um can I talk to a real live person", "agent"),
        ("sorry could you say that one more time", "repeat"),
        ("i want to go back a step", "go_back"),
        ("ok that is all bye", "goodbye"),
        ("where is my border", "order_status"),  # "order" heard as "border"
        ("um im calling four my order", "order_status"),  # "for" heard as "four"
        ("i was charged two times for the same thing", "billing_dispute"),
        ("i cant remember my pass word", "password_reset"),  # split word, no apostrophe
        ("i need to finish my loan application from yesterday", "loan_resume"),
        ("i want to confirm my appointment on friday", "appointment"),
        ("the courier never came with my parcel", "delivery"),
        ("um can we move it to another day", "reschedule"),
        ("please cancel it", "cancel"),
        ("hi there good morning", "greet"),
        ("thanks a million", "thanks"),
    ],
)
def test_unseen_utterances(classifier: IntentClassifier, text: str, intent: str) -> None:
    result = classifier.classify(text)
    assert result.intent == intent, result.ranking[:3]
    assert result.confidence >= classifier.threshold


@pytest.mark.parametrize(
    "text", ["what's the weather like in paris", "play some jazz music", "purple elephants dance at midnight"]
)
def test_out_of_scope_is_not_understood(classifier: IntentClassifier, text: str) -> None:
    result = classifier.classify(text)
    assert result.intent is None
    assert result.confidence < classifier.threshold
    assert result.ranking  # the ranking is still there for logging and analytics


def test_result_shape(classifier: IntentClassifier) -> None:
    result = classifier.classify("where is my order")
    assert isinstance(result, IntentResult)
    names = [name for name, _ in result.ranking]
    scores = [score for _, score in result.ranking]
    assert sorted(names) == sorted(classifier.intents)
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores) and sum(scores) <= 1.0 + 1e-3  # scores are rounded to 4 places
    assert result.ranking[0] == (result.intent, result.confidence)


def test_threshold_decides_between_intent_and_none(classifier: IntentClassifier) -> None:
    clf = classifier
    text = "um maybe something about my order"
    result = clf.classify(text)
    best, confidence = result.ranking[0]
    clf.threshold = confidence + 0.01
    assert clf.classify(text).intent is None
    clf.threshold = max(0.0, confidence - 0.01)
    assert clf.classify(text).intent == best
    clf.threshold = 0.0
    assert clf.classify("banana").intent is not None
    clf.threshold = 1.01
    assert clf.classify("where is my order").intent is None


def test_training_is_deterministic(examples: dict[str, list[str]], classifier: IntentClassifier) -> None:
    first = classifier
    # the same examples in another order train the same model
    shuffled = {name: list(examples[name]) for name in reversed(list(examples))}
    second = IntentClassifier.train(shuffled)
    assert first.intents == second.intents
    assert np.array_equal(first.weights, second.weights)
    for text in ("i was overcharged", "hello", "what's the capital of peru"):
        assert first.classify(text) == second.classify(text)


def test_empty_and_odd_input(classifier: IntentClassifier) -> None:
    for text in ("", "   ", "...", "4 5 6 7", "uh um"):
        result = classifier.classify(text)
        assert result.intent is None or result.intent in classifier.intents
        assert 0.0 <= result.confidence <= 1.0


def test_training_needs_examples() -> None:
    with pytest.raises(ValueError):
        IntentClassifier.train({})
    with pytest.raises(ValueError):
        IntentClassifier.train({"agent": []})


def test_small_example_sets_train_too() -> None:
    clf = IntentClassifier.train({
        "yes_please": ["yes please do it", "go ahead and do that"],
        "weather": ["what is the weather", "will it rain tomorrow"],
    }, threshold=0.0)
    assert clf.classify("is it going to rain").intent == "weather"


def test_nlu_parse_gives_intent_and_entities(nlu: Nlu) -> None:
    nlu.classifier.threshold = 0.45
    result = nlu.parse("um my order number is four five six seven", today=dt.date(2026, 11, 25))
    assert isinstance(result, NluResult)
    assert result.intent == "order_status"
    assert result.entities["digits"] == "4567"
    assert "yes_no" not in result.entities and "date" not in result.entities

    angry = nlu.parse("this is ridiculous, you charged me forty two dollars fifty twice!!!")
    assert angry.intent == "billing_dispute"
    assert angry.entities["amount"] == Decimal("42.50")
    assert angry.entities["frustration"] >= 0.5

    answer = nlu.parse("yes, next tuesday", today=dt.date(2026, 11, 25))
    assert answer.entities["yes_no"] is True
    assert answer.entities["date"] == dt.date(2026, 12, 1)

    spelled = nlu.parse("it's a as in alpha b c one two")
    assert spelled.entities["spelled"] == "ABC12"

    lost = nlu.parse("purple elephants dance at midnight")
    assert lost.intent is None and lost.text == "purple elephants dance at midnight"
    assert nlu.threshold == 0.45


async def test_recognizer_style_speech_through_the_real_core(tmp_path: Path) -> None:
    """Fillers, a split word, a digit homophone and spoken digits drive a journey end to end."""
    from gateway.app import build_core
    from gateway.config import load_settings
    from gateway.core.actions import Ask, SendFollowUp
    from gateway.core.events import CallStarted, UserSaid

    core = await build_core(load_settings(environ={}, overrides={"data_dir": str(tmp_path)}))
    try:
        opened = await core.open("voice", event=CallStarted(caller_id="+15550000000"))
        cid = opened.conversation_id
        acts = await core.handle(cid, UserSaid("um uh i cant remember my pass word", confidence=0.7))
        asks = [a for a in acts if isinstance(a, Ask)]
        assert asks and asks[-1].expect.kind == "digits"
        await core.handle(cid, UserSaid("five five six six seven seven ate eight", confidence=0.6))
        acts = await core.handle(cid, UserSaid("nine seven five three", confidence=0.8))
        follow = [a for a in acts if isinstance(a, SendFollowUp)]
        assert follow and follow[0].link_purpose == "reset_password"
    finally:
        await core.store.close()
