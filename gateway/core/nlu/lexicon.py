"""Contact-centre concepts: words and phrases that mean the same thing to the gateway.

A few dozen examples per intent cannot contain every way of saying "a person" or "my bill".
Each utterance therefore also gets one feature per concept it mentions ("representative",
"operator" and "somebody real" all add ``PERSON``), so an intent learns from the concept and
recognises synonyms none of its examples used. The lists are general English for customer
service, not tied to any journey; journeys teach intents, this module only teaches synonyms.
"""

from __future__ import annotations

from collections.abc import Sequence

CONCEPTS: dict[str, tuple[str, ...]] = {
    "PERSON": (
        "human", "person", "people", "someone", "somebody", "anyone", "anybody", "agent", "representative",
        "rep", "operator", "staff", "advisor", "adviser", "supervisor", "manager", "employee", "attendant",
        "colleague", "individual", "live agent", "real person", "human being", "customer service",
        "customer support", "support team", "team member",
    ),
    "TALK": ("talk", "speak", "chat", "connect", "transfer", "put me through", "get me", "reach"),
    "MACHINE": ("machine", "robot", "bot", "computer", "automated", "recording"),
    "HEAR": (
        "repeat", "pardon", "catch", "hear", "heard", "missed", "say again", "come again", "once more",
        "one more time", "did you say", "cut out",
    ),
    "BACK": (
        "go back", "back up", "previous", "undo", "redo", "step back", "last question", "change my answer",
        "start over", "start again", "beginning", "restart", "from scratch", "main menu",
    ),
    "BYE": (
        "bye", "goodbye", "farewell", "see you", "hang up", "end the call", "that is all", "i am done",
        "i am finished", "have to go", "nothing else", "good night",
    ),
    "HELP": (
        "help", "options", "choices", "choice", "menu", "what can you do", "can you do",
        "how does this work", "confused", "what to say", "what to do",
    ),
    "ORDER": (
        "order", "purchase", "package", "stuff", "items", "things", "bought", "shipment", "shipped", "ship",
        "shipping", "dispatched", "tracking", "track", "placed",
    ),
    "BILL": (
        "bill", "billing", "billed", "invoice", "statement", "charge", "charged", "fee", "fees", "payment",
        "overcharged", "doublecharged", "refund", "money back", "money", "dispute", "card", "amount",
        "paid", "pay", "cost",
    ),
    "ERROR": (
        "wrong", "error", "mistake", "incorrect", "do not recognize", "twice", "double", "too much",
        "unexpected", "not authorize",
    ),
    "LOGIN": (
        "password", "passcode", "pin", "login", "signin", "log in", "sign in", "logging in", "locked",
        "lock", "locked out", "unlock", "access", "username", "credentials", "website", "online account",
        "app",
    ),
    "FORGOT": (
        "forgot", "forget my", "do not remember", "can not remember", "reset", "new password", "recover",
        "not working", "does not work",
    ),
    "LOAN": ("loan", "mortgage", "credit", "financing", "borrow"),
    "APPLICATION": ("application", "apply", "applying", "applied", "form", "request"),
    "RESUME": (
        "continue", "resume", "finish", "complete", "pick up", "halfway", "stuck", "started", "incomplete",
        "unfinished", "left off", "did not finish", "crashed", "interrupted",
    ),
    "APPOINTMENT": (
        "appointment", "booking", "booked", "visit", "meeting", "consultation", "technician", "session",
        "reservation",
    ),
    "DELIVERY": (
        "delivery", "deliver", "delivered", "redeliver", "deliveries", "courier", "driver", "parcel",
        "delivery person", "neighbor", "neighbour", "showed up",
    ),
    "CHANGE_TIME": (
        "reschedule", "move", "change the time", "change the date", "different time", "another time",
        "another day", "another date", "new time", "later", "earlier", "postpone", "push", "instead",
        "can not make it", "does not work", "busy",
    ),
    "DAY": (
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "tomorrow", "today",
        "next week", "weekend", "morning", "afternoon", "evening", "date", "day", "time",
    ),
    "CANCEL": (
        "cancel", "call off", "forget it", "never mind", "stop", "drop it", "scrap", "do not want",
        "do not need", "no longer", "anymore", "changed my mind", "do not bother",
    ),
    "GREET": (
        "hello", "hi", "hey", "good morning", "good afternoon", "good evening", "howdy", "greetings", "hiya",
        "how are you", "anyone there", "hear me",
    ),
    "THANKS": ("thanks", "thank", "appreciate", "appreciated", "grateful", "cheers", "helpful"),
}

# phrase (as a tuple of words) -> concepts, for a longest-first scan
_PHRASES: dict[tuple[str, ...], list[str]] = {}
for _concept, _words in CONCEPTS.items():
    for _phrase in _words:
        _PHRASES.setdefault(tuple(_phrase.split()), []).append(_concept)
_MAX_LEN = max(len(p) for p in _PHRASES)


def concepts(words: Sequence[str]) -> list[str]:
    """The concepts ``words`` mention, in order, longest phrase first at each position."""
    return [concept for concept, _, _ in concept_spans(words)]


def concept_spans(words: Sequence[str]) -> list[tuple[str, int, int]]:
    """Each concept mention as ``(concept, start, end)`` word indices."""
    found: list[tuple[str, int, int]] = []
    i = 0
    while i < len(words):
        for size in range(min(_MAX_LEN, len(words) - i), 0, -1):
            hit = _PHRASES.get(tuple(words[i : i + size]))
            if hit is not None:
                found.extend((concept, i, i + size) for concept in hit)
                i += size
                break
        else:
            i += 1
    return found
