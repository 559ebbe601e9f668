"""Redaction of free text before it reaches the event log.

What is masked (each kind can be switched off in ``settings.redaction``):

- payment card numbers: 13 to 19 digits, optionally grouped by single spaces or dashes, that
  pass the Luhn check -> ``[card ****1111]`` (last four kept, as on a receipt);
- national ids shaped like a US SSN (``123-45-6789`` or ``123 45 6789``) -> ``[id]``;
- PINs: values under keys such as ``pin`` or ``passcode``, and digits following the words
  "pin", "passcode" or "password" in free text -> ``[pin]``;
- anything the caller lists in ``sensitive`` (slot values a journey marks sensitive), wherever
  it appears, digits matched also when spoken apart ("4 3 2 1", "4-3-2-1") -> ``[redacted]``.

A payload can also mark itself: ``{"sensitive": true, ...}`` masks every free-text field of it
(``text``, ``digits``, ``value``, ...); ``{"sensitive": ["text"]}`` masks the named fields.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from gateway.config import RedactionSettings

CARD_MASK = "[card ****{last4}]"
ID_MASK = "[id]"
PIN_MASK = "[pin]"
VALUE_MASK = "[redacted]"

PIN_KEYS = frozenset({"pin", "pin_code", "pincode", "passcode", "password", "cvv", "cvc", "otp"})
"""Payload keys whose value is a secret whatever it looks like."""

FREE_TEXT_KEYS = frozenset({"text", "digits", "value", "utterance", "answer", "message", "body"})
"""Fields masked as a whole when a payload marks itself ``sensitive: true``."""

# A run of digits with at most one space or dash between two digits.
_DIGIT_RUN = re.compile(r"(?<![\d])\d(?:[ -]?\d)*(?![\d])")
_SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
_PIN_IN_TEXT = re.compile(
    r"(?i)\b(pin(?:\s*(?:code|number))?|passcode|password)(\s*(?:is|was|:|=)?\s*)(\d(?:[ -]?\d){2,11})\b"
)
_DIGIT_WORDS = {
    "0": "zero|oh|o", "1": "one", "2": "two", "3": "three", "4": "four",
    "5": "five", "6": "six", "7": "seven", "8": "eight", "9": "nine",
}
_MIN_SENSITIVE_CHARS = 2  # a one-character "secret" would mask half of every sentence


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_window(groups: list[str]) -> tuple[int, int] | None:
    """The longest run of whole digit groups that forms a Luhn-valid 13-19 digit number."""
    best: tuple[int, int] | None = None
    best_len = 0
    for start in range(len(groups)):
        digits = ""
        for end in range(start, len(groups)):
            digits += groups[end]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and len(digits) > best_len and luhn_ok(digits):
                best, best_len = (start, end), len(digits)
    return best


def _mask_cards(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        run = match.group(0)
        parts = re.split(r"([ -])", run)
        groups, seps = parts[0::2], parts[1::2]
        if all(len(g) == 1 for g in groups) and len(groups) > 1:
            # digits spoken one by one ("4 1 1 1 ..."): treat the whole run as one group
            groups, seps = ["".join(groups)], []
        window = _card_window(groups)
        if window is None:
            return run
        start, end = window
        digits = "".join(groups[start : end + 1])
        out = ""
        for i, group in enumerate(groups):
            if i == start:
                out += CARD_MASK.format(last4=digits[-4:])
            elif not start < i <= end:
                out += group
            if i < len(seps) and not (start <= i < end):
                out += seps[i]
        return out

    return _DIGIT_RUN.sub(replace, text)


def _value_pattern(value: str) -> re.Pattern[str] | None:
    value = value.strip()
    if len(value) < _MIN_SENSITIVE_CHARS:
        return None
    if value.isdigit():
        # digits as typed or as recognized from speech: "4321", "4 3 2 1", "four three two one"
        body = r"[\s,-]*".join(f"(?:{ch}|{_DIGIT_WORDS[ch]})" for ch in value)
        return re.compile(r"(?i)(?<![0-9a-z])" + body + r"(?![0-9a-z])")
    return re.compile(r"(?i)(?<!\w)" + re.escape(value) + r"(?!\w)")


class Redactor:
    """Masks secrets in free text and in (nested) payloads, as ``settings.redaction`` says."""

    def __init__(self, settings: RedactionSettings | None = None) -> None:
        self.settings = settings or RedactionSettings()

    def redact_text(self, text: str, sensitive: Iterable[str] = ()) -> str:
        """``text`` with sensitive values, PINs, national ids and card numbers masked."""
        if not text:
            return text
        for value in sorted({str(v) for v in sensitive if v is not None}, key=len, reverse=True):
            pattern = _value_pattern(value)
            if pattern is not None:
                text = pattern.sub(VALUE_MASK, text)
        if self.settings.pins:
            text = _PIN_IN_TEXT.sub(lambda m: m.group(1) + m.group(2) + PIN_MASK, text)
        if self.settings.national_ids:
            text = _SSN.sub(ID_MASK, text)
        if self.settings.card_numbers:
            text = _mask_cards(text)
        return text

    def redact_payload(self, payload: dict[str, Any], sensitive: Iterable[str] = ()) -> dict[str, Any]:
        """A redacted copy of ``payload`` (nested dicts and lists included); not modified in place."""
        values = tuple(str(v) for v in sensitive if v is not None and str(v).strip())
        return self._dict(payload, values)

    def _dict(self, payload: dict[str, Any], sensitive: tuple[str, ...]) -> dict[str, Any]:
        marked = payload.get("sensitive")
        if marked is True:
            masked_keys: frozenset[str] = FREE_TEXT_KEYS
        elif isinstance(marked, (list, tuple)):
            masked_keys = frozenset(str(k) for k in marked)
        else:
            masked_keys = frozenset()
        out: dict[str, Any] = {}
        for key, value in payload.items():
            name = str(key)
            if value is None or isinstance(value, bool) or name == "sensitive":
                out[name] = value
            elif self.settings.pins and name.lower() in PIN_KEYS and not isinstance(value, (dict, list)):
                out[name] = PIN_MASK if value != "" else value
            elif name in masked_keys and not isinstance(value, (dict, list)):
                out[name] = VALUE_MASK if value != "" else value
            else:
                out[name] = self._value(value, sensitive)
        return out

    def _value(self, value: Any, sensitive: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return self._dict(value, sensitive)
        if isinstance(value, (list, tuple)):
            return [self._value(v, sensitive) for v in value]
        if isinstance(value, str):
            return self.redact_text(value, sensitive)
        if isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
            redacted = self.redact_text(text, sensitive)
            return value if redacted == text else redacted
        return value
