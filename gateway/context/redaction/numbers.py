"""Numbers recognized by their shape and check digits: payment cards, national ids, IBANs.

Each function returns :class:`~gateway.context.redaction.spans.Span` objects (where, and what
to write instead); the :class:`~gateway.context.redaction.Redactor` picks among overlapping
spans and rewrites the text once.

- **Cards**: 13 to 19 digits in one run (any separator, spoken or written, see
  :mod:`.digits`), passing Luhn, starting with 2-6 (ISO/IEC 7812 major industry identifiers of
  banking and payment cards: Visa 4, Mastercard 2/5, Amex 3, Discover/UnionPay/Maestro 6).
  Grouped numbers are read in groups of at most six digits (card groups are 4-6 long), so a
  timestamp ``1702912345.123456`` or an all-digit UUID is not read as a card. Inside a longer
  run every valid window is masked, overlapping ones together: masking two digits too many
  ("... 1111 22 items") is better than leaving three behind.
- **US SSN**: a run of exactly three written groups of 3, 2 and 4 digits (any separator) that
  the SSA could have issued (area not 000, 666 or 900-999; group not 00; serial not 0000).
- **Canadian SIN**: a run of exactly three written groups of 3 digits joined by spaces or
  dashes, passing Luhn, first digit 1-7 or 9 (0 and 8 are never issued to people).
- **UK National Insurance number**: two prefix letters as HMRC allocates them, six digits,
  a suffix A-D (``AB 12 34 56 C``); spaces only between the pairs, in capitals when spaced.
- **IBAN**: a country code with that country's IBAN length (ISO 13616 registry), grouped or
  not, whose check digits pass mod 97.
"""

from __future__ import annotations

import re
from typing import Iterable

from gateway.context.redaction.digits import Run, luhn_ok
from gateway.context.redaction.spans import Span

CARD_MASK = "[card ****{last4}]"
ID_MASK = "[id]"
IBAN_MASK = "[iban]"

CARD_FIRST_DIGITS = frozenset("23456")
MAX_CARD_GROUP = 6  # Amex groups 4-6-5; longer groups are one unbroken number or something else
CURRENCY_BEFORE = re.compile(r"[$€£¥]\s*$")
_HAS_DIGIT = re.compile(r"\d")


def card_mask(digits: str) -> str:
    """The card mask, keeping the last four digits as a receipt does."""
    return CARD_MASK.format(last4=digits[-4:])


def _card_windows(run: Run) -> list[tuple[int, int]]:
    """Every window ``(i, j)`` of whole tokens that reads as a card number."""
    windows = []
    tokens = run.tokens
    for i in range(len(tokens)):
        if tokens[i].digits[0] not in CARD_FIRST_DIGITS:
            continue
        digits = ""
        for j in range(i, len(tokens)):
            if j > i and (len(tokens[j].digits) > MAX_CARD_GROUP or len(tokens[i].digits) > MAX_CARD_GROUP):
                break
            digits += tokens[j].digits
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_ok(digits):
                windows.append((i, j))
    return windows


def cards(runs: Iterable[Run]) -> list[Span]:
    """Luhn-valid card numbers in ``runs``. Overlapping candidates are masked together (a
    19-digit card whose first 16 digits also pass Luhn leaves nothing behind); the last four
    digits shown are those of the masked stretch."""
    spans: list[Span] = []
    for run in runs:
        if sum(len(t.digits) for t in run.tokens) < 13:
            continue
        merged: list[list[int]] = []
        for i, j in sorted(_card_windows(run)):
            if merged and i <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], j)
            else:
                merged.append([i, j])
        for i, j in merged:
            digits = "".join(t.digits for t in run.tokens[i : j + 1])
            spans.append(Span(run.tokens[i].start, run.tokens[j].end, card_mask(digits), "card"))
    return spans


def _ssn_ok(area: str, group: str, serial: str) -> bool:
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def national_ids(text: str, runs: Iterable[Run]) -> list[Span]:
    """SSN- and SIN-shaped runs, and UK National Insurance numbers."""
    spans: list[Span] = []
    if not _HAS_DIGIT.search(text):
        return spans
    for run in runs:
        if len(run.tokens) != 3 or not all(t.written for t in run.tokens):
            continue
        shape = tuple(len(t.digits) for t in run.tokens)
        a, b, c = (t.digits for t in run.tokens)
        if shape == (3, 2, 4) and _ssn_ok(a, b, c):
            spans.append(Span(run.start, run.end, ID_MASK, "national_id"))
        elif (shape == (3, 3, 3) and all(g.strip(" \t\u00a0") in ("", "-") for g in run.gaps)
              and a[0] not in "08" and luhn_ok(a + b + c) and not CURRENCY_BEFORE.search(text, 0, run.start)):
            spans.append(Span(run.start, run.end, ID_MASK, "national_id"))
    for match in _NINO.finditer(text):
        value = match.group(0)
        prefix = value[:2].upper()
        if prefix in NINO_NOT_ISSUED or (" " in value and not value.isupper()):
            continue
        spans.append(Span(match.start(), match.end(), ID_MASK, "national_id"))
    return spans


# HMRC: first letter not D, F, I, Q, U, V; second not D, F, I, O, Q, U, V; suffix A-D.
_NINO = re.compile(r"(?i)(?<![\w])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d\d ?\d\d ?\d\d ?[A-D](?![\w])")
NINO_NOT_ISSUED = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
"""IBAN length per country (the ISO 13616 registry)."""
_IBAN = re.compile(r"(?i)(?<![\w])[A-Z]{2}\d\d(?:[ \t-]{0,2}[A-Z0-9]){11,30}")


def _mod97(iban: str) -> bool:
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def ibans(text: str) -> list[Span]:
    """IBANs of a known country with valid check digits, spaced or not."""
    spans: list[Span] = []
    if not _HAS_DIGIT.search(text):
        return spans
    pos = 0
    while (match := _IBAN.search(text, pos)) is not None:
        # a failed candidate may swallow the start of a real IBAN ("ab12 GB82 WEST ..."):
        # look again from the next character, not from the candidate's end
        pos = match.start() + 1
        length = IBAN_LENGTHS.get(match.group(0)[:2].upper())
        if length is None:
            continue
        chars, end = [], match.start()
        for pos in range(match.start(), match.end()):
            if text[pos].isalnum():
                chars.append(text[pos].upper())
                end = pos + 1
                if len(chars) == length:
                    break
        if len(chars) != length or (end < len(text) and text[end].isalnum()):
            continue
        if _mod97("".join(chars)):
            spans.append(Span(match.start(), end, IBAN_MASK, "iban"))
            pos = end
    return spans
