"""Entities the journeys ask for, read from what a caller said or typed.

All parsers are pure functions of the text and return None when the entity is absent:

- :func:`extract_digits`: account numbers, PINs, codes ("four five six seven", "double seven oh one")
- :func:`parse_yes_no`: confirmations in their many forms ("yeah", "that's right", "not really")
- :func:`parse_date`: dates ("March third", "03/04/1985", "next Tuesday")
- :func:`parse_amount`: money ("forty two dollars fifty", "$42.50", "forty two fifty")
- :func:`parse_spelled`: spelled letters and codes ("a as in alpha b c one two")
- :func:`frustration_score`: how angry or stuck the caller sounds, 0..1
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .dates import parse_date
from .frustration import frustration_score
from .numbers import UNITS, ZERO_WORDS, NumberGroup, number_groups, parse_cardinal
from .polarity import parse_yes_no
from .spelling import parse_spelled
from .text import tokens as normalize_tokens

__all__ = [
    "extract_digits",
    "frustration_score",
    "parse_amount",
    "parse_date",
    "parse_spelled",
    "parse_yes_no",
]

# "one" is a pronoun after these words ("no one", "this one") unless digits follow.
_PRONOUN_ONE_AFTER = frozenset(
    {"no", "this", "that", "the", "which", "any", "some", "every", "each", "another", "other", "a"}
)


def extract_digits(text: str) -> str | None:
    """All digits said in ``text``, in order, as one string; None when there are none.

    "my account is four five six seven" -> "4567"; "double seven oh one" -> "7701";
    "twenty three" -> "23"; "4 5 6" -> "456". Digit homophones ("for", "to") and "oh" count
    only inside a run of digits, so "calling for my order" has no digits.
    """
    toks = [t.replace(",", "") for t in normalize_tokens(text) if not re.fullmatch(r"\d+(st|nd|rd|th)", t)]
    toks = [t for t in toks if "." not in t]
    groups = number_groups(toks, homophones=True)
    parts: list[str] = []
    for k, group in enumerate(groups):
        if _is_pronoun_one(toks, group, groups[k + 1] if k + 1 < len(groups) else None):
            continue
        in_run = k > 0 and groups[k - 1].end == group.start
        parts.extend(_split_hundreds(toks, group) if in_run else [group.digits])
    digits = "".join(parts)
    return digits or None


def _split_hundreds(toks: list[str], group: NumberGroup) -> list[str]:
    """Inside a run of digits, "eight hundred" is "800" and what follows is more digits.

    "one eight hundred five five five" is 1-800-555, not 1, 805, 5, 5.
    """
    span = toks[group.start : group.end]
    if "hundred" not in span or span[-1] == "hundred":
        return [group.digits]
    cut = span.index("hundred") + 1
    head = parse_cardinal(span[:cut], 0)
    if head is None:
        return [group.digits]
    return [head.digits] + [g.digits for g in number_groups(span[cut:], homophones=True)]


def _is_pronoun_one(toks: list[str], group: NumberGroup, following: NumberGroup | None) -> bool:
    if toks[group.start] != "one" or group.end - group.start != 1:
        return False
    if following is not None and following.start == group.end:
        return False
    return group.start > 0 and toks[group.start - 1] in _PRONOUN_ONE_AFTER


# --- amounts --------------------------------------------------------------------------------

_MAJOR_WORDS = frozenset({"dollar", "dollars", "buck", "bucks", "pound", "pounds", "euro", "euros", "quid"})
_MINOR_WORDS = frozenset({"cent", "cents", "penny", "pence", "p"})
_CURRENCY_SIGNS = frozenset({"$", "£", "€"})
_WRITTEN_AMOUNT_RE = re.compile(r"[$£€]\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\b")


def parse_amount(text: str) -> Decimal | None:
    """The money amount in ``text`` as a Decimal with cents, or None.

    "forty two dollars fifty" -> 42.50, "$42.50" -> 42.50, "forty two fifty" -> 42.50,
    "fifty cents" -> 0.50, "a hundred and twenty dollars" -> 120.00, "42 dollars" -> 42.00.
    Two spoken numbers in a row read as dollars and cents, the way prices are said.
    """
    m = _WRITTEN_AMOUNT_RE.search(text)
    if m:
        return _money(m.group(1).replace(",", ""), m.group(2) or "0")
    toks = [t for t in normalize_tokens(text) if t not in _CURRENCY_SIGNS]
    # "a dollar fifty", "a buck"
    toks = ["one" if t == "a" and toks[k + 1 : k + 2] and toks[k + 1] in _MAJOR_WORDS else t
            for k, t in enumerate(toks)]
    for i, tok in enumerate(toks):
        if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?|\d+\.\d+", tok):
            whole, _, frac = tok.replace(",", "").partition(".")
            return _money(whole, frac[:2] or "0")
    groups = number_groups(toks)
    if not groups:
        return None
    # the number said with a currency word, else the first one ("account 12345, forty dollars")
    priced = [g for g in groups if g.end < len(toks) and toks[g.end] in _MAJOR_WORDS | _MINOR_WORDS]
    if not priced and _read_digit_by_digit(groups):
        return None  # "five five five one two": a number read out, not a sum of money
    first = priced[0] if priced else groups[0]
    after = first.end
    # "fifty cents"
    if after < len(toks) and toks[after] in _MINOR_WORDS:
        return _money_cents(first.value // 100, first.value % 100)
    # "forty two point five oh", "42 point 50"
    if after < len(toks) and toks[after] == "point":
        frac = _fraction_digits(toks, after + 1)
        if frac:
            return _money(str(first.value), frac[:2])
    has_major = after < len(toks) and toks[after] in _MAJOR_WORDS
    j = after + 1 if has_major else after
    if j < len(toks) and toks[j] == "and":
        j += 1
    second = parse_cardinal(toks, j) if j < len(toks) else None
    if second is not None and second.value < 100:
        is_cents = second.end < len(toks) and toks[second.end] in _MINOR_WORDS
        # "forty two fifty": two numbers in a row are dollars and cents; "two fifty" too.
        if has_major or is_cents or (second.start == first.end and second.value >= 10):
            return _money_cents(first.value, second.value)
    return _money_cents(first.value, 0)


def _read_digit_by_digit(groups: list[NumberGroup]) -> bool:
    """Three or more single digits in a row ("one two three"), as codes and phone numbers are read."""
    run = 0
    for k, group in enumerate(groups):
        single = group.end - group.start == 1 and len(group.digits) == 1
        run = run + 1 if single and (run == 0 or groups[k - 1].end == group.start) else int(single)
        if run >= 3:
            return True
    return False


def _fraction_digits(toks: list[str], i: int) -> str:
    out = ""
    while i < len(toks) and len(out) < 2:
        tok = toks[i]
        if tok in UNITS:
            out += str(UNITS[tok])
        elif tok in ZERO_WORDS:
            out += "0"
        elif tok.isdigit():
            out += tok
        else:
            break
        i += 1
    return out


def _money(whole: str, fraction: str) -> Decimal | None:
    """Decimal from whole units and the digits after the decimal point ("5" -> .50, "05" -> .05)."""
    try:
        return (Decimal(int(whole)) + Decimal("0." + (fraction + "0")[:2])).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return None


def _money_cents(whole: int, cents: int) -> Decimal:
    """Decimal from whole units and a count of cents (0..99)."""
    return (Decimal(whole) + Decimal(cents) / 100).quantize(Decimal("0.01"))
