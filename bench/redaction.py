"""Redaction figures: the share of secrets masked per kind, false positives, cost per message.

    .venv/bin/python -m bench.redaction

What it measures, with the real :class:`~gateway.context.redaction.Redactor` (default
settings, every kind on):

- **share redacted** on the test set ``tests/context/redaction_cases.yaml``: a form counts
  as redacted when none of its secret strings is left and the kind's mask is there; per kind,
  typed and as a recognizer writes them (spoken) apart. The set was written with the redactor,
  so it shows what is covered, not what customers will invent;
- **false positives** twice: on the test set's must-stay list (written with the redactor too),
  and on text written for other purposes: the NLU bench's held-out customer utterances and
  entity phrases (``bench/data/nlu_heldout.yaml``) and every prompt of the journeys
  (``config/journeys``). Each changed text is printed: the held-out set holds a few real
  secrets ("my pin is six six oh oh"), which are right to mask;
- **cost per message**: median and 95th percentile of ``redact_text`` on this machine, for a
  typical chat message, one carrying a card number and a PIN, and a long message (2,000
  characters); the load average is printed beside it.

Prints figures; never fails.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import yaml

from gateway.context.redaction import KINDS, Redactor

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "context" / "redaction_cases.yaml"
HELDOUT = ROOT / "bench" / "data" / "nlu_heldout.yaml"
JOURNEYS = ROOT / "config" / "journeys"
MASKS = {"card": "[card ****", "national_id": "[id]", "pin": "[pin]", "security_code": "[pin]",
         "iban": "[iban]", "password": "[password]", "dob": "[dob]"}
TARGET_FULL = ("card", "national_id", "pin", "security_code", "iban", "password")
"""Kinds whose target is every form of the set."""

MESSAGES = {
    "typical chat message": "hi, I was charged twice for the sports package on my last bill, can you help me with that",
    "with a card and a PIN": "my card is 4111 1111 1111 1111 and my pin is 4321, I was charged twice for the sports package",
    "long message (2,000 chars)": ("I called last week about order 10001 and was told it would arrive on March 14, "
                                   "but it never did. ") * 21,
}
RUNS = 2000


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def independent_texts() -> list[str]:
    """Text written for other purposes: held-out NLU utterances and entity phrases, journey prompts."""
    heldout = yaml.safe_load(HELDOUT.read_text(encoding="utf-8"))
    texts = [u["text"] for key in ("utterances", "utterances_blind", "utterances_final") for u in heldout.get(key, [])]
    texts += [e["text"] for section in heldout.get("entities", {}).values() for e in section]
    for path in sorted(JOURNEYS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(data, dict) and "journey" in data:
            texts += [t for t in _strings(data.get("steps", [])) if " " in t]
    return texts


def share_redacted(redactor: Redactor, cases: list[dict[str, Any]]) -> None:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    missed = []
    for case in cases:
        out = redactor.redact_text(case["text"])
        ok = all(s not in out for s in case["gone"]) and case.get("mask", MASKS[case["kind"]]) in out
        for key in ((case["kind"], "all"), (case["kind"], case.get("said", "written"))):
            totals[key][0] += ok
            totals[key][1] += 1
        if not ok:
            missed.append(f"{case['kind']}: {case['text']!r} -> {out!r}")
    print(f"\nshare redacted on {CASES.relative_to(ROOT)} ({len(cases)} forms)")
    print(f"  {'kind':15s} {'all':>15s} {'typed':>10s} {'spoken':>10s}   target")
    for kind in KINDS:
        done, total = totals[(kind, "all")]
        cells = [f"{d}/{t}" if t else "-" for d, t in (totals[(kind, "written")], totals[(kind, "spoken")])]
        target = "100 %" if kind in TARGET_FULL else "-"
        print(f"  {kind:15s} {done:4d}/{total:<4d}{100 * done / total:5.1f} % {cells[0]:>10s} {cells[1]:>10s}   {target}")
    for line in missed:
        print("  missed", line)


def false_positives(redactor: Redactor, label: str, texts: list[str]) -> None:
    changed = [(t, redactor.redact_text(t)) for t in texts]
    changed = [(t, out) for t, out in changed if out != t]
    print(f"\n{label}: {len(changed)} of {len(texts)} texts changed ({100 * len(changed) / len(texts):.1f} %)")
    for text, out in changed:
        print(f"  {text!r} -> {out!r}")


def cost(redactor: Redactor) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ncost per message (redact_text, {RUNS} runs each; {os.cpu_count()} CPUs, load average {load:.2f})")
    for label, text in MESSAGES.items():
        samples = []
        for _ in range(RUNS):
            start = time.perf_counter()
            redactor.redact_text(text)
            samples.append(time.perf_counter() - start)
        samples.sort()
        p50 = statistics.median(samples) * 1e6
        p95 = samples[int(len(samples) * 0.95) - 1] * 1e6
        print(f"  {label:28s} {len(text):5d} chars   median {p50:7.1f} us   p95 {p95:7.1f} us")


def main() -> None:
    print("redaction bench (figures only; nothing here fails)")
    data = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    redactor = Redactor()
    share_redacted(redactor, data["mask"])
    false_positives(redactor, "false positives on the test set's must-stay list", data["keep"])
    false_positives(redactor, "changes on text written for other purposes (NLU held-out set, journey prompts)",
                    independent_texts())
    cost(redactor)


if __name__ == "__main__":
    main()
