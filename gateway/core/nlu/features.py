"""Turning an utterance into a sparse TF-IDF vector of words, character n-grams and concepts.

Three views of the same utterance, each weighted by TF-IDF and normalized on its own:

- words (light-stemmed unigrams and bigrams), which carry the meaning;
- character 3-5-grams inside each word, which survive recognition errors ("refund" and
  "re fund", "reschedule" and "rescheduled", "pasword") and unseen word forms;
- contact-centre concepts (:mod:`gateway.core.nlu.lexicon`), so synonyms no example used
  ("representative", "somebody real") still count.

Before either, the text is normalized (contractions, fillers, split words, number runs become
one ``#num`` token, common recogniser homophones folded), so "I'm calling four my order number
four five six" and "I am calling for my order number 456" produce the same features.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .lexicon import concept_spans, concepts
from .numbers import ORDINALS, is_number_word
from .text import tokens as normalize_tokens

NUMBER_TOKEN = "#num"
# Recogniser confusions folded into the word the contact centre hears most.
HOMOPHONES = {
    "four": "for", "fore": "for", "too": "to", "border": "order", "boarder": "order",
    "odor": "order", "u": "you", "ur": "your", "r": "are", "pls": "please", "plz": "please",
    "thx": "thanks", "ty": "thanks", "thankyou": "thanks", "nevermind": "never mind",
    "pasword": "password", "passwrd": "password", "cancelled": "cancel", "canceled": "cancel",
    "cancelling": "cancel", "canceling": "cancel", "counsel": "cancel", "council": "cancel",
    "ok": "okay", "bot": "robot",
}
# Function words: they carry no topic, so they do not count towards vocabulary coverage.
STOPWORDS = frozenset("""
a an the i me my mine we us our you your he she it its they them their this that these those is am are
was were be been being do does did have has had will would can could should shall may might must to of
in on at by for with from about as into over under up down out off and or but if so not no yes just
please then than there here what which who whom whose when where why how all any some very really also
too again still already now ok okay oh well like get got go going want need would like let s
""".split())
CHAR_RANGE = (3, 5)
WORD_WEIGHT = 1.0
CHAR_WEIGHT = 1.0
CONCEPT_WEIGHT = 1.0


# "four" heard for "for": a lone "four" before these words is the preposition ("calling four my order").
_FOR_BEFORE = frozenset({"my", "the", "a", "an", "your", "this", "that", "me", "it", "some", "help"})


def classifier_words(text: str) -> list[str]:
    """Normalized words of ``text`` for classification (number runs collapsed, homophones folded)."""
    out: list[str] = []
    toks = normalize_tokens(text)
    for k, tok in enumerate(toks):
        if tok == "four" and toks[k + 1 : k + 2] and toks[k + 1] in _FOR_BEFORE and not (
            k > 0 and is_number_word(toks[k - 1])
        ):
            out.append("for")
            continue
        if is_number_word(tok) or tok in ORDINALS:
            if not out or out[-1] != NUMBER_TOKEN:
                out.append(NUMBER_TOKEN)
            continue
        folded = HOMOPHONES.get(tok, tok)
        out.extend(folded.split())
    return out


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A light suffix stripper: "charged", "charges", "charging" -> "charg"."""
    if len(word) <= 3 or word.startswith("#"):
        return word
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: len(word) - len(suffix)] + keep
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


def word_features(words: list[str]) -> list[str]:
    stems = [stem(w) for w in words]
    feats = ["w:" + s for s in stems]
    feats.extend("b:" + a + "_" + b for a, b in zip(stems, stems[1:]))
    return feats


def concept_features(words: list[str]) -> list[str]:
    return ["k:" + c for c in concepts(words)]


def char_features(words: list[str]) -> list[str]:
    feats: list[str] = []
    for word in words:
        feats.extend(_word_ngrams(word))
    return feats


def clear_caches() -> None:
    """Forget the per-word caches (for benchmarks that time a cold start)."""
    _word_ngrams.cache_clear()
    stem.cache_clear()


@lru_cache(maxsize=1 << 16)
def _word_ngrams(word: str) -> tuple[str, ...]:
    """Character n-grams of one word padded with spaces (cached: callers reuse few words)."""
    lo, hi = CHAR_RANGE
    padded = " " + word + " "
    return tuple("c:" + padded[k : k + n] for n in range(lo, hi + 1) for k in range(len(padded) - n + 1))


@dataclass(frozen=True)
class Analysis:
    """The features of one utterance before weighting: computed once, used to fit and to transform."""

    words: tuple[str, ...]
    word_feats: tuple[str, ...]
    char_feats: tuple[str, ...]
    concept_feats: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> "Analysis":
        words = classifier_words(text)
        return cls(tuple(words), tuple(word_features(words)), tuple(char_features(words)),
                   tuple(concept_features(words)))

    def distinct(self) -> set[str]:
        return set(self.word_feats) | set(self.char_feats) | set(self.concept_feats)


@dataclass(frozen=True)
class SparseRow:
    """One vectorized utterance: feature indices (sorted), their weights, and coverage.

    ``coverage`` is the share of the utterance's character n-grams the vocabulary knows and
    ``word_coverage`` the share of its content words: 1.0 for wording like the examples,
    near 0 for out-of-domain speech.
    """

    indices: np.ndarray
    values: np.ndarray
    coverage: float
    word_coverage: float = 1.0


class Vectorizer:
    """TF-IDF over word and character n-grams and concepts, fitted on the training examples."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray) -> None:
        self.vocabulary = vocabulary
        self.idf = idf

    @classmethod
    def fit(cls, texts: Sequence[str]) -> "Vectorizer":
        """Vocabulary (sorted, so training is deterministic) and smoothed IDF from ``texts``."""
        return cls.fit_analyses([Analysis.of(t) for t in texts])

    @classmethod
    def fit_analyses(cls, analyses: Sequence[Analysis]) -> "Vectorizer":
        df: Counter[str] = Counter()
        for analysis in analyses:
            df.update(analysis.distinct())
        names = sorted(df)
        vocabulary = {name: k for k, name in enumerate(names)}
        n = len(analyses)
        idf = np.array([math.log((1 + n) / (1 + df[name])) + 1.0 for name in names], dtype=np.float64)
        return cls(vocabulary, idf)

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    def transform(self, text: str) -> SparseRow:
        """The L2-normalized vector of ``text``; unknown features are dropped."""
        return self.transform_analysis(Analysis.of(text))

    def transform_analysis(self, analysis: Analysis) -> SparseRow:
        word_block = self._block(analysis.word_feats, WORD_WEIGHT)
        char_block = self._block(analysis.char_feats, CHAR_WEIGHT)
        concept_block = self._block(analysis.concept_feats, CONCEPT_WEIGHT)
        merged: dict[int, float] = {**word_block, **char_block, **concept_block}
        char_feats = analysis.char_feats
        known_chars = sum(1 for f in char_feats if f in self.vocabulary)
        coverage = known_chars / len(char_feats) if char_feats else 0.0
        in_concepts = {k for _, start, end in concept_spans(analysis.words) for k in range(start, end)}
        content = [k for k, w in enumerate(analysis.words) if w not in STOPWORDS and not w.startswith("#")]
        known_words = sum(
            1 for k in content if k in in_concepts or "w:" + stem(analysis.words[k]) in self.vocabulary
        )
        word_coverage = known_words / len(content) if content else 1.0
        if not merged:
            return SparseRow(np.zeros(0, dtype=np.int64), np.zeros(0), coverage, word_coverage)
        indices = np.array(sorted(merged), dtype=np.int64)
        values = np.array([merged[k] for k in indices], dtype=np.float64)
        norm = float(np.linalg.norm(values))
        return SparseRow(indices, values / norm, coverage, word_coverage)

    def _block(self, feats: Sequence[str], weight: float) -> dict[int, float]:
        counts = Counter(f for f in feats if f in self.vocabulary)
        if not counts:
            return {}
        block: dict[int, float] = {}
        for feature, count in counts.items():
            index = self.vocabulary[feature]
            block[index] = (1.0 + math.log(count)) * float(self.idf[index])
        norm = math.sqrt(sum(v * v for v in block.values()))
        return {k: weight * v / norm for k, v in block.items()}
