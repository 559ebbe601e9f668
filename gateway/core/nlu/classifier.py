"""Intent classification learned from the journeys' examples.

A multinomial logistic regression over TF-IDF words, character n-grams and concepts
(:mod:`gateway.core.nlu.features`), trained by full-batch gradient descent with Nesterov
momentum, in numpy only. Training is deterministic (sorted vocabulary, sorted intents, zero
initial weights, a fixed number of steps) and takes well under a second for a thousand
examples on an idle core.

The confidence is the model's probability for the best intent, damped when the wording is
unfamiliar: when less than 70 % of the utterance's character n-grams, or of its content words,
occur in the examples (out-of-domain speech such as "what's the weather in Paris" shares only
stray fragments with them). Below ``threshold`` the intent is None: the dialog says it did not
understand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .features import Analysis, SparseRow, Vectorizer

DEFAULT_THRESHOLD = 0.45
# Chosen by cross-validation on the examples (bench/nlu_accuracy.py prints the figures).
L2 = 1e-4  # weight decay on the mean log-loss
STEPS = 150  # full-batch gradient steps
LEARNING_RATE = 2.0  # rows have unit norm, so the loss is smooth enough for a large step
MOMENTUM = 0.9
COVERAGE_FLOOR = 0.7  # below this share of known character n-grams the confidence is damped
WORD_COVERAGE_FLOOR = 0.7  # likewise for the share of known content words


@dataclass(frozen=True)
class IntentResult:
    """The best intent (None when below the threshold), its confidence and the full ranking."""

    intent: str | None
    confidence: float
    ranking: tuple[tuple[str, float], ...]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class IntentClassifier:
    """Maps an utterance to one of the trained intents with a confidence in 0..1."""

    def __init__(
        self,
        intents: tuple[str, ...],
        vectorizer: Vectorizer,
        weights: np.ndarray,
        bias: np.ndarray,
        threshold: float = DEFAULT_THRESHOLD,
        training_texts: tuple[str, ...] = (),
    ) -> None:
        self.intents = intents
        self.training_texts = training_texts
        self.vectorizer = vectorizer
        self.weights = weights
        self.bias = bias
        self.threshold = threshold

    @classmethod
    def train(
        cls, examples: Mapping[str, Sequence[str]], threshold: float = DEFAULT_THRESHOLD
    ) -> "IntentClassifier":
        """Learn intents from ``{intent: [example, ...]}``; deterministic for the same examples."""
        intents = tuple(sorted(name for name, texts in examples.items() if texts))
        if not intents:
            raise ValueError("no intent examples to train on")
        texts: list[str] = []
        labels: list[int] = []
        for k, name in enumerate(intents):
            for text in examples[name]:
                texts.append(str(text))
                labels.append(k)
        analyses = [Analysis.of(t) for t in texts]
        vectorizer = Vectorizer.fit_analyses(analyses)
        rows = [vectorizer.transform_analysis(a) for a in analyses]
        keep = [i for i, r in enumerate(rows) if len(r.indices)]
        matrix = _dense([rows[i] for i in keep], vectorizer.size)
        targets = np.zeros((len(keep), len(intents)))
        targets[np.arange(len(keep)), [labels[i] for i in keep]] = 1.0
        weights, bias = _fit_softmax(matrix, targets)
        return cls(intents, vectorizer, weights, bias, threshold, tuple(texts))

    def probabilities(self, text: str) -> tuple[np.ndarray, float]:
        """Class probabilities for ``text`` (in ``self.intents`` order) and how familiar its wording is.

        Familiarity is 1.0 when the utterance's character n-grams and content words are mostly
        known from the examples, and falls towards 0 for out-of-domain speech.
        """
        row = self.vectorizer.transform(text)
        logits = self.bias.copy()
        if len(row.indices):
            logits = logits + row.values @ self.weights[row.indices]
        familiarity = 1.0
        if COVERAGE_FLOOR > 0:
            familiarity *= min(1.0, row.coverage / COVERAGE_FLOOR)
        if WORD_COVERAGE_FLOOR > 0:
            familiarity *= min(1.0, row.word_coverage / WORD_COVERAGE_FLOOR)
        return _softmax(logits), familiarity

    def classify(self, text: str) -> IntentResult:
        """The intent of ``text``; ``intent`` is None when the confidence is below ``threshold``."""
        probs, familiarity = self.probabilities(text)
        scores = probs * familiarity
        order = sorted(range(len(self.intents)), key=lambda k: (-probs[k], self.intents[k]))
        ranking = tuple((self.intents[k], round(float(scores[k]), 4)) for k in order)
        best, confidence = ranking[0]
        return IntentResult(best if confidence >= self.threshold else None, confidence, ranking)


# OpenBLAS runs a product of fewer than 65536 * 4 multiply-adds on one thread and splits a larger
# one over all cores, which then waits for the slowest core: on a busy host that made training
# 5-10x slower. The training loop therefore multiplies in row blocks kept under that size.
_SINGLE_THREAD_MACS = 200_000


def _rows_matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ right`` computed in blocks of rows (same result, steadier time on a loaded host)."""
    block = max(1, _SINGLE_THREAD_MACS // max(1, left.shape[1] * right.shape[1]))
    if left.shape[0] <= block:
        return left @ right
    return np.concatenate([left[i : i + block] @ right for i in range(0, left.shape[0], block)])


def _dense(rows: list[SparseRow], n_features: int) -> np.ndarray:
    matrix = np.zeros((len(rows), n_features), dtype=np.float32)
    for i, row in enumerate(rows):
        matrix[i, row.indices] = row.values
    return matrix


def _fit_softmax(matrix: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by Nesterov-accelerated gradient descent.

    Gradient descent from zero weights keeps W in the span of the training rows, W = X.T @ A,
    so the descent runs on A with the Gram matrix K = X @ X.T: each step costs n*n*k instead
    of n*d*k (n examples, d features, k intents), and the result is the same.
    """
    n, k = targets.shape
    gram = matrix @ matrix.T  # float32: half the memory traffic of float64, same decisions
    targets = targets.astype(np.float32)
    coef = np.zeros((n, k), dtype=np.float32)
    bias = np.zeros(k, dtype=np.float32)
    vel_a = np.zeros_like(coef)
    vel_b = np.zeros_like(bias)
    for _ in range(STEPS):
        look_a = coef + MOMENTUM * vel_a
        look_b = bias + MOMENTUM * vel_b
        probs = _softmax(_rows_matmul(gram, look_a) + look_b)
        err = (probs - targets) / n
        vel_a = MOMENTUM * vel_a - LEARNING_RATE * (err + L2 * look_a)
        vel_b = MOMENTUM * vel_b - LEARNING_RATE * err.sum(axis=0)
        coef = coef + vel_a
        bias = bias + vel_b
    weights = (matrix.T @ coef).astype(np.float64)
    bias = bias.astype(np.float64)
    return weights, bias
