"""Turning an answer into a slot value for what the step expects.

Speech and chat answers go through the NLU's entity parsers (spoken digits, dates, amounts,
yes/no in their many forms); DTMF answers arrive as digit strings. ``None`` means the answer
did not fit, which the dialog engine treats as a no-match.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from gateway.core.actions import Expect
from gateway.core.journey_steps import AskStep
from gateway.core.nlu.entities import extract_digits, parse_amount, parse_date, parse_yes_no

DTMF_YES_NO = {"1": True, "2": False}


def expect_for(step: AskStep, no_input_seconds: float) -> Expect:
    """The channel-facing ``Expect`` of an ask step (what the recognizer should listen for)."""
    kind = step.expect
    if kind == "dob_or_pin":
        return Expect(kind="date", min_digits=4, max_digits=4, no_input_seconds=no_input_seconds,
                      sensitive=True)
    lo, hi = step.digits or (0, 0)
    return Expect(kind=kind, options=step.options, min_digits=lo, max_digits=hi,
                  no_input_seconds=no_input_seconds, sensitive=step.sensitive)


def _choice(text: str, options: tuple[str, ...]) -> str | None:
    lowered = text.lower()
    digits = extract_digits(text)
    if digits and len(digits) == 1 and 1 <= int(digits) <= len(options):
        return options[int(digits) - 1]
    hits = [opt for opt in options if opt.lower() in lowered]
    if not hits:  # "call back" answers the option "callback", "text me" the option "text"
        squeezed = lowered.replace(" ", "").replace("-", "")
        hits = [opt for opt in options if opt.lower().replace(" ", "") in squeezed]
    return hits[0] if len(hits) == 1 else None


def interpret(step: AskStep, text: str, *, today: date, from_dtmf: bool = False) -> Any | None:
    """The slot value ``text`` gives for ``step``, or None when it does not fit."""
    text = text.strip()
    if not text:
        return None
    kind = step.expect
    if kind == "digits":
        digits = extract_digits(text) if not from_dtmf else text.rstrip("#")
        if not digits or not digits.isdigit():
            return None
        lo, hi = step.digits or (1, 32)
        return digits if lo <= len(digits) <= hi else None
    if kind == "yesno":
        if from_dtmf:
            answer = DTMF_YES_NO.get(text[:1])
        else:
            answer = parse_yes_no(text)
        return None if answer is None else ("yes" if answer else "no")
    if kind == "choice":
        return _choice(text, step.options)
    if kind == "date":
        day = parse_date(text, today=today)
        return day.isoformat() if day else None
    if kind == "amount":
        amount = parse_amount(text)
        return str(amount) if amount is not None else None
    if kind == "dob_or_pin":
        if not from_dtmf:
            day = parse_date(text, today=today)
            if day is not None and day.year < today.year:
                return {"date": day.isoformat()}
        digits = extract_digits(text) if not from_dtmf else text.rstrip("#")
        if digits and digits.isdigit() and len(digits) == 4:
            return {"pin": digits}
        return None
    return text
