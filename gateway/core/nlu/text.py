"""Tokenizing recognised speech and typed chat into plain lowercase words.

Speech recognisers and people typing produce the same words in many shapes: "can't" and
"cant", "twenty-three" and "twenty three", "Um, yeah" and "yeah". Every NLU component starts
from :func:`tokens`, which removes those differences once, so the entity parsers and the intent
classifier see the same words.
"""

from __future__ import annotations

import re

# A token is a word (letters, inner apostrophes), a number as written ("42", "42.50",
# "1,200", "3rd"), or a currency sign. Everything else separates tokens.
_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?|[a-z]+(?:'[a-z]+)*|[$£€]")

# Hesitations speech recognisers transcribe; they never carry meaning for the gateway.
FILLERS = frozenset({"um", "umm", "uh", "uhh", "uhm", "erm", "er", "ah", "ahh", "hmm", "hm", "mmm", "eh"})

# Hesitation pairs that are an assent: "uh huh", "mm hmm".
_ASSENT_SOUNDS = {"uh": ("huh",), "mm": ("hmm", "hm"), "mhm": (), "um": ("hum",)}

# Contractions, with and without the apostrophe (recognisers often drop it).
CONTRACTIONS: dict[str, tuple[str, ...]] = {
    "can't": ("can", "not"), "cant": ("can", "not"), "cannot": ("can", "not"),
    "won't": ("will", "not"), "wont": ("will", "not"),
    "don't": ("do", "not"), "dont": ("do", "not"),
    "doesn't": ("does", "not"), "doesnt": ("does", "not"),
    "didn't": ("did", "not"), "didnt": ("did", "not"),
    "isn't": ("is", "not"), "isnt": ("is", "not"),
    "aren't": ("are", "not"), "arent": ("are", "not"),
    "wasn't": ("was", "not"), "wasnt": ("was", "not"),
    "weren't": ("were", "not"), "haven't": ("have", "not"), "havent": ("have", "not"),
    "hasn't": ("has", "not"), "hasnt": ("has", "not"), "hadn't": ("had", "not"),
    "shouldn't": ("should", "not"), "wouldn't": ("would", "not"), "wouldnt": ("would", "not"),
    "couldn't": ("could", "not"), "couldnt": ("could", "not"), "ain't": ("is", "not"),
    "i'm": ("i", "am"), "im": ("i", "am"), "i've": ("i", "have"), "ive": ("i", "have"),
    "i'll": ("i", "will"), "i'd": ("i", "would"),
    "it's": ("it", "is"), "that's": ("that", "is"), "thats": ("that", "is"),
    "what's": ("what", "is"), "whats": ("what", "is"), "where's": ("where", "is"),
    "wheres": ("where", "is"), "there's": ("there", "is"), "theres": ("there", "is"),
    "here's": ("here", "is"), "who's": ("who", "is"), "how's": ("how", "is"),
    "let's": ("let", "us"), "you're": ("you", "are"), "youre": ("you", "are"),
    "we're": ("we", "are"), "they're": ("they", "are"), "you've": ("you", "have"),
    "we've": ("we", "have"), "you'll": ("you", "will"), "we'll": ("we", "will"),
    "wanna": ("want", "to"), "gonna": ("going", "to"), "gotta": ("got", "to"),
    "lemme": ("let", "me"), "gimme": ("give", "me"), "kinda": ("kind", "of"),
    "y'all": ("you", "all"), "ya'll": ("you", "all"), "o'clock": ("oclock",),
}

# Words recognisers split in two; rejoined so that one concept is one token.
JOINS: dict[tuple[str, str], str] = {
    ("pass", "word"): "password", ("pass", "code"): "passcode", ("log", "in"): "login",
    ("sign", "in"): "signin", ("user", "name"): "username", ("e", "mail"): "email",
    ("re", "schedule"): "reschedule", ("re", "fund"): "refund", ("some", "one"): "someone",
    ("any", "one"): "anyone", ("every", "one"): "everyone", ("good", "bye"): "goodbye",
    ("bye", "bye"): "goodbye", ("any", "more"): "anymore", ("x", "ray"): "xray",
    ("over", "charged"): "overcharged", ("double", "charged"): "doublecharged",
}


# One utterance is a few dozen words; a chat message is bounded by the channel. Anything past
# this many characters is not read, so a pasted novel costs the same as a long sentence.
MAX_TEXT_CHARS = 4000


def raw_tokens(text: str) -> list[str]:
    """Lowercase word, number and currency tokens of ``text``, hyphens split, nothing else changed."""
    lowered = text[:MAX_TEXT_CHARS].lower().replace("\u2019", "'").replace("\u2018", "'")
    return _TOKEN_RE.findall(lowered)


def tokens(text: str) -> list[str]:
    """Normalized tokens: contractions expanded, fillers dropped, split words rejoined."""
    out: list[str] = []
    raw = raw_tokens(text)
    for k, tok in enumerate(raw):
        if tok in _ASSENT_SOUNDS and k + 1 < len(raw) and raw[k + 1] in _ASSENT_SOUNDS[tok]:
            out.append("uhhuh")  # "uh huh", "mm hmm": a yes, not two hesitations
            continue
        if tok in ("huh", "hmm") and out and out[-1] == "uhhuh":
            continue
        if tok in FILLERS:
            continue
        expanded = CONTRACTIONS.get(tok)
        if expanded is not None:
            out.extend(expanded)
        elif tok.endswith("'s"):
            out.append(tok[:-2])
        elif "'" in tok:
            out.append(tok.replace("'", ""))
        else:
            out.append(tok)
    return join_split_words(out)


def join_split_words(words: list[str]) -> list[str]:
    """Rejoin pairs such as "pass word" into "password" (see :data:`JOINS`)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if i + 1 < len(words):
            joined = JOINS.get((words[i], words[i + 1]))
            if joined is not None:
                out.append(joined)
                i += 2
                continue
        out.append(words[i])
        i += 1
    return out


def clauses(text: str) -> list[list[str]]:
    """Normalized tokens per clause (split at sentence punctuation and commas)."""
    parts = re.split(r"[,.;:!?]+(?:\s|$)|\s-\s|\n", text[:MAX_TEXT_CHARS])
    return [toks for toks in (tokens(p) for p in parts) if toks]
