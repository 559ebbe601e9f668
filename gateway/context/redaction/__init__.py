"""Redaction of free text and payloads before they reach the event log, the record, the SMS
record of what Twilio sent, and the log.

What is masked (each kind can be switched off in ``settings.redaction``):

- payment card numbers, Luhn-checked, 13-19 digits, any separator, written or spoken
  ("four one one one ...", "double one") -> ``[card ****1111]`` (last four kept, as on a
  receipt); after "card number" the digits are masked even when a misheard digit breaks Luhn;
- national ids: US SSN, Canadian SIN (Luhn), UK National Insurance number, by shape or after
  their name ("my social is oh seven eight ...") -> ``[id]``;
- PINs ("my pin is 4321", "pin: four three two one", "4321 is my pin") -> ``[pin]``;
- security codes: CVV/CVC, "the code on the back is 123", one-time codes -> ``[pin]``;
- IBANs with valid check digits -> ``[iban]``;
- passwords in free text ("my password is hunter2", "password: S3cret!") -> ``[password]``;
- dates of birth introduced as such ("born on March 14 1985", "DOB 14/03/1985") -> ``[dob]``;
- anything the caller lists in ``sensitive`` (values a journey marks sensitive), wherever it
  appears, digits matched also when spoken apart -> ``[redacted]`` (always on).

A payload can also mark itself: ``{"sensitive": true, ...}`` masks every free-text field of it
(``text``, ``digits``, ``value``, ...); ``{"sensitive": ["text"]}`` masks the named fields.
Values under keys that name a secret (``pin``, ``cvv``, ``password``, ``dob``, ``ssn``,
``iban``, ...) are masked whatever they look like.

The modules: :mod:`.digits` (digit runs, spoken and written), :mod:`.numbers` (cards, ids,
IBANs by shape and check digits), :mod:`.phrases` (PINs, codes, passwords, ids by keyword),
:mod:`.birth_dates`, :mod:`.spans` (what a rule found, which finding wins), :mod:`.logs` (the
logging filter).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Iterable

from gateway.context.redaction import birth_dates, numbers, phrases
from gateway.context.redaction.birth_dates import DOB_MASK
from gateway.context.redaction.digits import Run, digit_runs, luhn_ok
from gateway.context.redaction.numbers import CARD_MASK, IBAN_MASK, ID_MASK
from gateway.context.redaction.phrases import PASSWORD_MASK, PIN_MASK
from gateway.context.redaction.spans import Span, choose

if TYPE_CHECKING:
    from gateway.config import RedactionSettings

__all__ = [
    "CARD_MASK", "DOB_MASK", "IBAN_MASK", "ID_MASK", "KINDS", "PASSWORD_MASK", "PIN_MASK", "VALUE_MASK",
    "Redactor", "luhn_ok",
]

VALUE_MASK = "[redacted]"

KINDS = ("card", "national_id", "pin", "security_code", "iban", "password", "dob")
"""What :meth:`Redactor.spans` reports as ``Span.kind`` (plus ``sensitive`` for given values)."""

KEY_MASKS = {
    **dict.fromkeys(("pin", "pin_code", "pincode", "passcode", "otp", "one_time_code"), ("pins", PIN_MASK)),
    **dict.fromkeys(("cvv", "cvc", "cvv2", "cvc2", "csc", "security_code"), ("security_codes", PIN_MASK)),
    **dict.fromkeys(("password", "passwd", "passphrase"), ("passwords", PASSWORD_MASK)),
    **dict.fromkeys(("dob", "date_of_birth", "birth_date", "birthdate", "birthday"), ("dates_of_birth", DOB_MASK)),
    **dict.fromkeys(("ssn", "sin", "nino", "national_id", "social_security_number"), ("national_ids", ID_MASK)),
    "iban": ("ibans", IBAN_MASK),
}
"""Payload keys whose value is a secret whatever it looks like: key -> (switch, mask)."""

FREE_TEXT_KEYS = frozenset({"text", "digits", "value", "utterance", "answer", "message", "body"})
"""Fields masked as a whole when a payload marks itself ``sensitive: true``."""

_DIGIT_WORDS = {
    "0": "zero|oh|o", "1": "one", "2": "two", "3": "three", "4": "four",
    "5": "five", "6": "six", "7": "seven", "8": "eight", "9": "nine",
}
_MIN_SENSITIVE_CHARS = 2  # a one-character "secret" would mask half of every sentence

_CARD_KEYS = re.compile(
    r"(?i)(?<![a-z])(?:(?:credit|debit|payment|bank)\s+)?card(?P<number>\s+(?:number|no\.?|#|num)(?![a-z]))?"
    r"(?P<fill>(?:\s*(?:[:=,-]|is\b|was\b|['’]s\b|it['’]?s\b|would\s+be\b))*)\s*"
)
_INTRO = re.compile(r"[:=]|is|was|['’]s|be")
KEYED_CARD_DIGITS = (13, 19)


def _value_pattern(value: str) -> re.Pattern[str] | None:
    value = value.strip()
    if len(value) < _MIN_SENSITIVE_CHARS:
        return None
    if value.isdigit():
        # digits as typed or as recognized from speech: "4321", "4 3 2 1", "four three two one"
        body = r"[\s,-]*".join(f"(?:{ch}|{_DIGIT_WORDS[ch]})" for ch in value)
        return re.compile(r"(?i)(?<![0-9a-z])" + body + r"(?![0-9a-z])")
    return re.compile(r"(?i)(?<!\w)" + re.escape(value) + r"(?!\w)")


def _cards(text: str, runs: list[Run]) -> list[Span]:
    """Luhn-valid card numbers; and 13-19 digits right after "card number" (or "my card is")
    in a run where no valid number was found: a misheard digit must not leave the rest."""
    spans = numbers.cards(runs)
    if not runs or "card" not in text.lower():
        return spans
    done = {span.start for span in spans}
    by_start = {run.start: run for run in runs}
    for match in _CARD_KEYS.finditer(text):
        if not match.group("number") and not _INTRO.search(match.group("fill")):
            continue  # "not a card 4111111111111112": a card named, no number given
        run = by_start.get(match.end())
        if run is None or not KEYED_CARD_DIGITS[0] <= len(run.digits) <= KEYED_CARD_DIGITS[1]:
            continue
        if any(run.start <= start < run.end for start in done):
            continue
        spans.append(Span(run.start, run.end, numbers.card_mask(run.digits), "card"))
    return spans


class Redactor:
    """Masks secrets in free text and in (nested) payloads, as ``settings.redaction`` says."""

    def __init__(self, settings: RedactionSettings | None = None) -> None:
        # None masks every kind, as RedactionSettings() does, without loading the settings models
        # (a SIP worker's log redaction: pydantic alone is 14 MB of each worker).
        self.settings = settings
        on = self.masks
        rules: list[tuple[bool, Callable[[str, list[Run]], list[Span]]]] = [
            (on("card_numbers"), _cards),
            (on("ibans"), lambda text, runs: numbers.ibans(text)),
            (on("national_ids"), lambda text, runs: numbers.national_ids(text, runs) + phrases.keyed_ids(text, runs)),
            (on("pins"), phrases.pins),
            (on("security_codes"), phrases.security_codes),
            (on("passwords"), lambda text, runs: phrases.passwords(text)),
            (on("dates_of_birth"), birth_dates.dates_of_birth),
        ]
        self._rules = [rule for enabled, rule in rules if enabled]

    def masks(self, kind: str) -> bool:
        """Whether this redactor masks ``kind`` (a field of ``RedactionSettings``)."""
        return True if self.settings is None else bool(getattr(self.settings, kind))

    def spans(self, text: str, sensitive: Iterable[str] = ()) -> list[Span]:
        """What :meth:`redact_text` would mask in ``text``: non-overlapping spans, in order."""
        found: list[Span] = []
        for value in sorted({str(v) for v in sensitive if v is not None}, key=len, reverse=True):
            pattern = _value_pattern(value)
            if pattern is not None:
                found += [Span(m.start(), m.end(), VALUE_MASK, "sensitive") for m in pattern.finditer(text)]
        if self._rules:
            runs = digit_runs(text)
            for rule in self._rules:
                found += rule(text, runs)
        return choose(found)

    def redact_text(self, text: str, sensitive: Iterable[str] = ()) -> str:
        """``text`` with sensitive values and every enabled kind of secret masked."""
        if not text:
            return text
        spans = self.spans(text, sensitive)
        if not spans:
            return text
        out, pos = [], 0
        for span in spans:
            out += [text[pos : span.start], span.mask]
            pos = span.end
        out.append(text[pos:])
        return "".join(out)

    def redact_payload(self, payload: dict[str, Any], sensitive: Iterable[str] = ()) -> dict[str, Any]:
        """A redacted copy of ``payload`` (nested dicts and lists included); not modified in place."""
        values = tuple(str(v) for v in sensitive if v is not None and str(v).strip())
        return self._dict(payload, values)

    def _key_mask(self, name: str) -> str | None:
        rule = KEY_MASKS.get(name.lower())
        if rule is None or not self.masks(rule[0]):
            return None
        return rule[1]

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
                continue
            key_mask = None if isinstance(value, (dict, list)) else self._key_mask(name)
            if key_mask is not None:
                out[name] = key_mask if value != "" else value
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
