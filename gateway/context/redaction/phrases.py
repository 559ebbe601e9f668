"""Secrets recognized by what introduces them: PINs, security codes, passwords, keyed ids.

A PIN is four digits like any other four digits; what makes ``4321`` a secret is "my pin is".
Each rule is *keyword*, then at most a few *filler* words from a closed list ("is", "was",
"'s", ":", "would be", "I used", "on the back of my card", ...), then the *value*. The filler
list is closed on purpose: "my pin doesn't work since order 12345" has a word outside it, so
12345 stays. The reverse order is read too: "4321 is my pin".

- PINs (``pin``, ``pin number``, ``passcode``) and security codes (``cvv``, ``cvc``, ``csc``,
  ``security code``, ``the code on the back``, ``3-digit code``, one-time codes): the value is a
  digit run of 3 to 12 digits, written or spoken (:mod:`.digits`) -> ``[pin]``;
- national ids by name (``ssn``, ``social security number``, ``my social``, ``SIN``,
  ``national insurance number``, ``national id``): a run of 8 to 11 digits -> ``[id]`` (what the
  shape rules in :mod:`.numbers` would miss: no separators, spoken, an example SIN);
- passwords (``password``, ``passphrase``, ``pwd``): the next token, or a quoted phrase ->
  ``[password]``; not a word that describes the password rather than being it ("my password
  is wrong", "is not working", "is too long"); without "is"/":" and the like only a token that
  looks like a password (a digit, a symbol, inner capitals): "password hunter2" yes,
  "password reset" no.
"""

from __future__ import annotations

import re

from gateway.context.redaction.digits import Run
from gateway.context.redaction.numbers import ID_MASK
from gateway.context.redaction.spans import Span

PIN_MASK = "[pin]"
PASSWORD_MASK = "[password]"

PIN_DIGITS = (3, 12)  # CVV 3-4, PIN 4-12 (ISO 9564), one-time codes 4-8
ID_DIGITS = (8, 11)  # SSN and SIN 9; a little slack for a misheard digit
MAX_FILLER_WORDS = 6
MAX_PASSWORD_CHARS = 64

_CARD = r"(?:the|my|this|that|your)\s+card"
HESITATIONS = r"(?:uh+|um+|er+m?|ah+|hmm+)\b"
"""What a recognizer writes for a hesitation ("my pin is uh 4321"): filler like "is"."""
_BACK = r"(?:on|at)\s+the\s+(?:back|reverse)(?:\s+of\s+" + _CARD + r")?"
_FILL = (
    r"(?:\s*(?:[:=#,?-]|is\b|was\b|are\b|were\b|['’]s\b|would\s+be\b|should\s+be\b|will\s+be\b|it['’]?s\b"
    r"|it\s+is\b|which\s+is\b|that\s+is\b|number\b|code\b|no\.|(?:set|changed|reset)\s+to\b"
    r"|(?:that\s+)?i\s+(?:use|used|set|chose|picked|have|entered|typed)\b|(?:for|on|of)\s+" + _CARD + r"\b"
    r"|" + _BACK + r"\b|just\b|then\b|again\b|now\b|here\b|reads\b|says\b|" + HESITATIONS + r"))"
    rf"{{0,{MAX_FILLER_WORDS}}}"
)
PIN_KEYS = (
    r"pin(?:[\s-]*(?:code|number|no\.?|#))?|pass[\s-]?code|personal\s+identification\s+number"
)
CODE_KEYS = (
    r"cvv2?|cvc2?|cvn|csc|card\s+(?:security|verification)\s+(?:code|value|number)"
    r"|(?:security|verification)\s+(?:code|number|value|digits)"
    r"|one[\s-]time\s+(?:pass)?(?:code|pin)|otp"
    r"|(?:three|four|3|4)[\s-]digit\s+(?:security\s+)?(?:code|number)"
    r"|(?:the\s+)?(?:last\s+)?(?:three|four|3|4)\s+(?:digits|numbers)\s+" + _BACK
    + r"|(?:code|digits|numbers)\s+" + _BACK
)
ID_KEYS = (
    r"social\s+security(?:\s+(?:card\s+)?(?:number|no\.?|#))?|ssn|social\s+insurance(?:\s+(?:number|no\.?|#))?"
    r"|sin|national\s+insurance(?:\s+(?:number|no\.?|#))?|ni\s+(?:number|no\.?)|nino"
    r"|national\s+id(?:entity|entification)?(?:\s+(?:card\s+)?(?:number|no\.?))?|social"
)
"""Longest first: the regex takes the first alternative that matches."""


def _keyed(keys: str) -> re.Pattern[str]:
    return re.compile(r"(?i)(?<![a-z])(?:" + keys + r")(?![a-z])" + _FILL)


def _trailing(keys: str) -> re.Pattern[str]:
    """What follows a value that the words after it introduce: "4321 is my pin"."""
    return re.compile(
        r"(?i)\s*[,-]?\s*(?:(?:is|was|=|that['’]s|that\s+is|being|as)\s+)?(?:my|the|your|our|his|her|their)\s+"
        r"(?:new\s+|old\s+|current\s+|card['’]?s?\s+)?(?:" + keys + r")(?![a-z])"
    )


LAST_FOUR_DIGITS = (4, 4)
_LAST_FOUR = _keyed(r"last\s+(?:four|4)(?:\s+digits)?\s+(?:of|from)\s+(?:my|the|your)\s+(?:" + ID_KEYS + ")")
"""US callers are asked for "the last four of your social": four digits that verify a person."""
_PIN = _keyed(PIN_KEYS)
_CODE = _keyed(CODE_KEYS)
_ID = _keyed(ID_KEYS)
_PIN_AFTER = _trailing(PIN_KEYS + "|" + CODE_KEYS)
_VALUE_LEAD = " \t\"'“‘"


def _run_at(runs_by_start: dict[int, Run], text: str, pos: int) -> Run | None:
    while pos < len(text) and text[pos] in _VALUE_LEAD:
        pos += 1
    return runs_by_start.get(pos)


def mentions(text: str, words: tuple[str, ...]) -> bool:
    """Whether ``text`` contains one of ``words`` (lowercase) anywhere: a cheap test that spares
    the keyword patterns on the many messages that cannot match them."""
    lowered = text.lower()
    return any(word in lowered for word in words)


PIN_WORDS = ("pin", "pass", "personal")
CODE_WORDS = ("cvv", "cvc", "csc", "cvn", "code", "digit", "number", "otp", "security", "verification", "pin")
ID_WORDS = ("soc", "ssn", "sin", "insurance", "nino", "ni ", "national")
PASSWORD_WORDS = ("pass", "pwd")


def _keyed_runs(pattern: re.Pattern[str], text: str, runs: list[Run], bounds: tuple[int, int],
                mask: str, kind: str) -> list[Span]:
    by_start = {run.start: run for run in runs}
    spans = []
    for match in pattern.finditer(text):
        run = _run_at(by_start, text, match.end())
        if run is not None and bounds[0] <= len(run.digits) <= bounds[1]:
            spans.append(Span(run.start, run.end, mask, kind))
    return spans


def pins(text: str, runs: list[Run]) -> list[Span]:
    """PIN values introduced as such, before or after the value."""
    if not runs or not mentions(text, PIN_WORDS + CODE_WORDS):
        return []
    spans = _keyed_runs(_PIN, text, runs, PIN_DIGITS, PIN_MASK, "pin")
    return spans + _runs_before(_PIN_AFTER, text, runs, PIN_DIGITS, "pin")


def security_codes(text: str, runs: list[Run]) -> list[Span]:
    """CVV/CVC, "the code on the back", security and one-time codes."""
    if not runs or not mentions(text, CODE_WORDS):
        return []
    return _keyed_runs(_CODE, text, runs, PIN_DIGITS, PIN_MASK, "security_code")


def keyed_ids(text: str, runs: list[Run]) -> list[Span]:
    """National id numbers introduced by their name, and "the last four of my social"."""
    if not runs or not mentions(text, ID_WORDS):
        return []
    return (_keyed_runs(_ID, text, runs, ID_DIGITS, ID_MASK, "national_id")
            + _keyed_runs(_LAST_FOUR, text, runs, LAST_FOUR_DIGITS, ID_MASK, "national_id"))


def _runs_before(pattern: re.Pattern[str], text: str, runs: list[Run], bounds: tuple[int, int],
                 kind: str) -> list[Span]:
    return [Span(run.start, run.end, PIN_MASK, kind) for run in runs
            if bounds[0] <= len(run.digits) <= bounds[1] and pattern.match(text, run.end)]


# --- passwords ------------------------------------------------------------------------------

PASSWORD_KEYS = r"pass(?:word|wd|phrase)|pass\s+(?:word|phrase)|pwd|pass[\s-]?code"
_PW_FILL = (
    r"(?:\s*(?:[:=,-]|is\b|was\b|['’]s\b|would\s+be\b|should\s+be\b|will\s+be\b|used\s+to\s+be\b|it['’]?s\b"
    r"|it\s+is\b|which\s+is\b|that\s+is\b|(?:set|changed)\s+to\b|i['’]ve\s+(?:used|set|got)\b"
    r"|(?:that\s+)?i(?:['’]ve|\s+have)?\s+(?:been\s+)?(?:using|use|used|set|chose|picked|typed|entered|tried|have)\b"
    r"|for\s+(?:my|the|this)\s+(?:account|login|email|app|online\s+banking|portal|wi-?fi)\b"
    r"|(?:still|currently|now|then|just|probably|always|again)\b|" + HESITATIONS + r"))"
    rf"{{0,{MAX_FILLER_WORDS}}}"
)
_PASSWORD = re.compile(r"(?i)(?<![a-z])(?:" + PASSWORD_KEYS + r")(?![a-z])" + _PW_FILL + r"\s*")
_INTRO = re.compile(
    r"(?i)[:=]|['’]s\b|\b(?:is|was|be|to|use|used|using|set|typed|entered|tried|chose|picked|have|got)\b")
_QUOTED = re.compile(r"([\"'“‘])(.{1,%d}?)([\"'”’])" % MAX_PASSWORD_CHARS)
_TOKEN = re.compile(r"\S{1,%d}" % MAX_PASSWORD_CHARS)
_TRAILING_PUNCT = ".,;:?)\"'”’"
_DESCRIBES = re.compile(r"(?i)\s+(?:characters?|chars?|letters?|digits?|long)\b")
_LOOKS_SECRET = re.compile(r"\d|[^\w'’-]")
NOT_A_PASSWORD = frozenset("""
    not no wrong incorrect invalid expired expiring locked blocked working broken too very really still also
    correct right fine ok okay gone lost forgotten reset changed case a an the my your his her their our being
    been required needed missing empty weak strong short long hard easy what that this it which when where why
    how and or but for to in on at of with so because supposed same different about something nothing anything
    stored saved sent there here asking asked showing shown coming going link hint manager field box isnt
    isn't doesn't don't won't can't didn't wasn't you i me we they he she valid accepted rejected denied unknown
    like kind sort new old set mine yours please thanks thank sensitive taking getting
""".split())


def _password_value(text: str, pos: int) -> tuple[int, int] | None:
    quoted = _QUOTED.match(text, pos)
    if quoted is not None:
        return quoted.start(), quoted.end()
    token = _TOKEN.match(text, pos)
    if token is None:
        return None
    start, end = token.start(), token.end()
    while end - start > 1 and text[end - 1] in _TRAILING_PUNCT:
        end -= 1
    return start, end


def passwords(text: str) -> list[Span]:
    """Passwords introduced as such (see the module docstring for what is not one)."""
    if not mentions(text, PASSWORD_WORDS):
        return []
    spans = []
    for match in _PASSWORD.finditer(text):
        found = _password_value(text, match.end())
        if found is None:
            continue
        start, end = found
        value = text[start:end]
        quoted = value[0] in "\"'“‘" and len(value) > 1
        if not quoted:
            if value.lower() in NOT_A_PASSWORD or "://" in value or value.lower().startswith("www."):
                continue
            if _DESCRIBES.match(text, end):
                continue  # "my password is 8 characters long"
            if not _INTRO.search(match.group(0)) and not (
                _LOOKS_SECRET.search(value) or value[1:] != value[1:].lower()
            ):
                continue  # "password reset", "password please"
        spans.append(Span(start, end, PASSWORD_MASK, "password"))
    return spans
