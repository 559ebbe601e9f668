"""Closed-set grammars built at run time from what the journey expects.

``phrases_for(expect)`` lists what a caller may say for a closed ``Expect`` (digits of a given
length, yes/no in their common forms, one of a few options); ``jsgf_for`` turns that into a JSGF
grammar for pocketsphinx and ``vosk_grammar_for`` into a Vosk word list. Recognized words are
kept as spoken ("four five six", "yeah"): the conversation core's NLU parses them, so DTMF and
speech reach it the same way.

A closed grammar alone forces whatever is said into an answer ("I want to speak to an agent"
came back as the digits "nine one eight eight one eight eight"). So every closed grammar also
holds the global phrases (``GLOBAL_PHRASES``: agent, representative, operator, help, repeat, go
back), heard as said, and a garbage loop of words callers use when they do not answer
(``FILLER_WORDS``): a hypothesis on that loop is no answer at all (:func:`in_grammar` gives
""). With the Whisper cross-check, :func:`prefer_open_engine` also takes Whisper's transcript
when it is speech outside the question (:func:`out_of_grammar`), so the core hears what was
said and asks again (or hears the agent request) instead of looking up a forced number.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from gateway.core.actions import Expect

DIGIT_WORDS = ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
YES_PHRASES = (
    "yes", "yeah", "yep", "yup", "sure", "correct", "right", "that's right", "that is right",
    "that's correct", "that is correct", "yes please", "yes it is", "of course", "absolutely", "okay",
)
NO_PHRASES = (
    "no", "nope", "nah", "no thanks", "no thank you", "not really", "incorrect", "that's wrong",
    "that is wrong", "no it isn't", "no it is not", "wrong",
)
GLOBAL_PHRASES = (
    "agent", "an agent", "representative", "a representative", "operator", "the operator", "a person",
    "a real person", "customer service", "speak to an agent", "talk to a person", "speak to someone",
    "help", "repeat", "repeat that", "say that again", "go back", "back", "main menu",
)
"""Said instead of an answer at any closed-set step: the journeys' global intents, kept as said."""
FILLER_WORDS = (
    "want", "need", "speak", "talk", "person", "agent", "help", "repeat", "back", "what", "have", "don't",
    "know", "order", "bill", "package", "password", "address", "change", "hold",
)
"""The garbage loop: content words of what callers say when they do not answer. Short function
words ("a", "the", "I", "um") are left out on purpose: on 8 kHz audio they are cheap enough to
explain a digit string. Measured on the 8 kHz corpus (two voices, grammar alone): this list
forced 2 of 56 out-of-grammar utterances into answers (the plain grammar 39) at twice the plain
grammar's decoding time and 20 of 28 in-grammar answers right (plain 22); 47 words caught as
many but cost 5.5 times the time and 5 answers; 10 words let 7 through. With the Whisper
cross-check (the default) none got through and in-grammar answers were as right as before
(bench.asr)."""
_SOUNDS_LIKE_AN_ANSWER = {"digits": {"want"}, "yesno": {"know"}, "choice": set()}
"""Filler words left out of a kind's loop because they sound like one of its answers ("want" and
"one", "know" and "no")."""
_ANSWER_FILLERS = frozenset({"the", "please", "um", "uh", "a", "it", "is", "its", "it's", "my", "number", "and",
                             "that", "that's", "oh", "okay", "ok", "so", "er"})
"""Words that may surround an answer without making it another sentence ("my number is ...")."""
MIN_FOREIGN_WORDS = 2
"""Words outside the answer's vocabulary that make a transcript out-of-grammar speech; one alone
does only when nothing else was said ("Hello?"), since beside an answer word it may be Whisper
mishearing a filler ("Yes, ma'am"). A global phrase counts at once."""
MAX_GRAMMAR_DIGITS = 24
"""Longest digit string a grammar accepts (card numbers are 19 at most)."""
_CLEAN = re.compile(r"[^a-z' ]+")


def clean_phrase(text: str) -> str:
    """Lower-case words only (digits in option text are dropped; spell them out in options)."""
    return " ".join(_CLEAN.sub(" ", text.lower()).split())


def digit_bounds(expect: Expect) -> tuple[int, int]:
    """(min, max) digits to accept; an unset maximum allows up to ``MAX_GRAMMAR_DIGITS``."""
    low = max(1, expect.min_digits)
    high = expect.max_digits or MAX_GRAMMAR_DIGITS
    high = min(max(high, low), MAX_GRAMMAR_DIGITS)
    return min(low, high), high


def digit_sequence(low: int, high: int) -> str:
    """JSGF for ``low`` to ``high`` digits, the optional ones nested: ``<digit> [<digit> [<digit>]]``.

    The same language as ``<digit> [<digit>] [<digit>]``, but pocketsphinx turns a row of
    optionals into a grammar whose every state can skip to every later one, and its search slows
    with the square of their number: measured on 8 kHz digit strings, 1-24 digits took 38 s per
    utterance in a row and 0.24 s nested; 3-8 digits 0.48 s and 0.14 s, equally accurate."""
    tail = ""
    for _ in range(high - low):
        tail = f"[<digit> {tail}]" if tail else "[<digit>]"
    return " ".join(["<digit>"] * low + ([tail] if tail else []))


def option_phrases(expect: Expect) -> list[str]:
    """The spoken forms of ``choice`` options (empty ones dropped, duplicates removed)."""
    seen: list[str] = []
    for option in expect.options:
        phrase = clean_phrase(option)
        if phrase and phrase not in seen:
            seen.append(phrase)
    return seen


def jsgf_for(expect: Expect, known: Callable[[str], bool] = lambda _w: True, *, rejection: bool = True) -> str:
    """A JSGF grammar for a closed ``Expect``; words failing ``known`` (not in the dictionary) are left out.

    ``rejection``: the answers, the global phrases and the garbage loop (module docstring);
    without it the answers alone (every utterance is forced into one).
    """
    extra = ""
    if expect.kind == "digits":
        reply = digit_sequence(*digit_bounds(expect))
        extra = f"<digit> = {' | '.join(DIGIT_WORDS)};\n"
    elif expect.kind == "yesno":
        reply = " | ".join(p for p in (*YES_PHRASES, *NO_PHRASES) if all(known(w) for w in p.split()))
    elif expect.kind == "choice":
        alternatives = []
        for phrase in option_phrases(expect):
            words = [w for w in phrase.split() if known(w)]
            if words:
                alternatives.append(" ".join(words))
        if not alternatives:
            raise ValueError(f"no option of {list(expect.options)!r} has words the recognizer knows")
        reply = f"[the] ({' | '.join(alternatives)}) [please]"
    else:
        raise ValueError(f"expect kind {expect.kind!r} is not a closed set")
    head = "#JSGF V1.0;\ngrammar answer;\n"
    if not rejection:
        return head + f"public <answer> = {reply};\n" + extra
    answer_words = set(" ".join(option_phrases(expect)).split()) | _SOUNDS_LIKE_AN_ANSWER[expect.kind]
    globals_ = [p for p in GLOBAL_PHRASES if all(known(w) for w in p.split())]
    fillers = [w for w in FILLER_WORDS if w not in answer_words and known(w)]
    return (head + "public <answer> = <reply> | <global> | <other>;\n"
            f"<reply> = {reply};\n" + extra +
            f"<global> = {' | '.join(globals_)};\n"
            f"<other> = <filler>+;\n<filler> = {' | '.join(fillers)};\n")


def vosk_grammar_for(expect: Expect) -> str:
    """Vosk's runtime grammar: a JSON list of phrases, plus "[unk]" for anything else."""
    if expect.kind == "digits":
        phrases = list(DIGIT_WORDS)
    elif expect.kind == "yesno":
        phrases = [*YES_PHRASES, *NO_PHRASES]
    elif expect.kind == "choice":
        phrases = option_phrases(expect)
    else:
        raise ValueError(f"expect kind {expect.kind!r} is not a closed set")
    return json.dumps([*phrases, *GLOBAL_PHRASES, "[unk]"])


def plausible(text: str, expect: Expect) -> bool:
    """Whether a closed-set answer is a complete phrase of its grammar (not a cut-off partial path)."""
    words = text.split()
    if not words:
        return False
    if expect.kind == "digits":
        low, high = digit_bounds(expect)
        return all(w in DIGIT_WORDS for w in words) and low <= len(words) <= high
    if expect.kind == "yesno":
        return text in YES_PHRASES or text in NO_PHRASES
    if expect.kind == "choice":
        core = [w for w in words if w not in ("the", "please")]
        return " ".join(core) in option_phrases(expect) or text in option_phrases(expect)
    return True

def in_grammar(text: str, expect: Expect) -> str:
    """What a grammar's hypothesis says: an answer or a global phrase as is, "" for the garbage
    loop (no answer was given; nothing of the filler words goes on as if the caller said them)."""
    words = " ".join(text.split())
    if not words or plausible(words, expect) or words in GLOBAL_PHRASES:
        return words
    return ""


def _answer_vocabulary(expect: Expect) -> set[str]:
    if expect.kind == "digits":
        return set(DIGIT_WORDS) | {"double", "triple"}
    if expect.kind == "yesno":
        return {w for p in (*YES_PHRASES, *NO_PHRASES) for w in p.split()}
    return set(" ".join(option_phrases(expect)).split())


def out_of_grammar(text: str, expect: Expect) -> bool:
    """Whether a transcript (Whisper's) is speech other than an answer to a closed ``expect``:
    a global phrase, or at least ``MIN_FOREIGN_WORDS`` words no answer is made of."""
    said = " ".join(_CLEAN.sub(" ", text.lower().replace("-", " ")).split())
    if not said:
        return False
    if said in GLOBAL_PHRASES or any(re.search(rf"\b{re.escape(p)}\b", said) for p in GLOBAL_PHRASES if " " in p):
        return True
    answers = _answer_vocabulary(expect)
    foreign = [w for w in said.split() if w not in answers and w not in _ANSWER_FILLERS]
    answered = any(w in answers for w in said.split()) or (expect.kind == "digits" and bool(re.search(r"\d", text)))
    return len(foreign) >= MIN_FOREIGN_WORDS or (bool(foreign) and not answered)


_DIGIT_VALUE = {w: str(i) for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))}
_DIGIT_VALUE.update({"oh": "0", "o": "0"})


_ZEROS = re.compile("0+")


def one_by_one(text: str, longest: int = 1) -> bool:
    """The transcript writes each digit by itself ("1-0-0-0-1", "one zero"; no numeral of more than
    ``longest`` digits, in which Whisper may have miscounted a run of zeros or dropped an "oh")."""
    return all(len(run) <= longest for run in re.findall(r"\d+", text))


def _within(short: str, long: str) -> bool:
    """``short`` is ``long`` with some of its characters left out (in order)."""
    rest = iter(long)
    return all(ch in rest for ch in short)


def spoken_digits(text: str) -> str:
    """The digit string in a transcript, whether spoken ("four five oh") or written ("4-5-0")."""
    out = []
    for token in re.findall(r"[a-z]+|\d", text.lower()):
        if token.isdigit():
            out.append(token)
        elif token in _DIGIT_VALUE:
            out.append(_DIGIT_VALUE[token])
    return "".join(out)


def yes_no_meaning(text: str) -> str:
    """"yes", "no" or "" for a transcript that starts with one of the yes/no phrases."""
    words = " ".join(_CLEAN.sub(" ", text.lower().replace(",", " ")).split())
    for phrase in sorted(NO_PHRASES, key=len, reverse=True):
        if words == phrase or words.startswith(phrase + " "):
            return "no"
    for phrase in sorted(YES_PHRASES, key=len, reverse=True):
        if words == phrase or words.startswith(phrase + " "):
            return "yes"
    return ""


def answer_of(text: str, expect: Expect) -> str:
    """What a transcript answers to a closed ``expect``: its digits, "yes"/"no", or the options named."""
    if expect.kind == "digits":
        return spoken_digits(text)
    if expect.kind == "yesno":
        return yes_no_meaning(text)
    said = " ".join(_CLEAN.sub(" ", text.lower()).split())
    return "|".join(o for o in option_phrases(expect) if re.search(rf"\b{re.escape(o)}\b", said))


def prefer_open_engine(closed_text: str, open_text: str, expect: Expect) -> bool:
    """Whether the accurate engine's transcript (Whisper) answers a closed ``expect`` better than
    the closed grammar's own (pocketsphinx, Vosk), when both decoded the same turn.

    The grammar always returns something of the right shape, right or not; Whisper is the more
    accurate listener at 8 kHz but writes "oh" as nothing ("one oh two three" -> "103") and,
    writing digits as a number, miscounts runs of zeros ("one zero zero zero one" -> "100001").
    So Whisper's answer is taken when it fits the question (a digit count within bounds, a yes/no
    meaning, one of the options); written as a numeral (not one by one, as its digits prompt has
    it write them: "6-0-0-0-2"), not when it is the grammar's digits with some left out and an
    "oh" among them, or differs from the grammar's digits only in how many zeros a run holds (the
    grammar hears one word per digit); it is taken too when it is speech outside the question (:func:`out_of_grammar`:
    "I want to speak to an agent", "there's a wrong charge on my bill"), whatever the grammar
    made of it; otherwise the grammar's answer stands if it fits, and Whisper's if nothing fits.
    """
    closed_fits = plausible(closed_text, expect)
    other_speech = out_of_grammar(open_text, expect)
    if expect.kind == "digits":
        low, high = digit_bounds(expect)
        heard = spoken_digits(open_text)
        if not low <= len(heard) <= high:
            return other_speech or not closed_fits
        if not closed_fits:
            return True
        if one_by_one(open_text, longest=2):
            return True  # digits written apart (its digits prompt; "8-10-0-4-4-2"): none lost in a numeral
        said = spoken_digits(closed_text)
        if "oh" in closed_text.split() and len(heard) < len(said) and _within(heard, said):
            return False  # Whisper's digits are the grammar's with some left out, an "oh" among them
        return not (heard != said and _ZEROS.sub("0", heard) == _ZEROS.sub("0", said))
    if expect.kind == "yesno":
        return bool(yes_no_meaning(open_text)) or other_speech or not closed_fits
    if expect.kind == "choice":
        named = answer_of(open_text, expect)
        return (bool(named) and "|" not in named) or other_speech or not closed_fits
    return True

