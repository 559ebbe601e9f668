"""The redaction test set (tests/context/redaction_cases.yaml) through the real Redactor:
every written and spoken form is masked, and nothing in the keep list is touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.context.redaction import KINDS, Redactor

CASES_FILE = Path(__file__).with_name("redaction_cases.yaml")
CASES: dict[str, Any] = yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))
MASKS = {"card": "[card ****", "national_id": "[id]", "pin": "[pin]", "security_code": "[pin]",
         "iban": "[iban]", "password": "[password]", "dob": "[dob]"}
REDACTOR = Redactor()


def test_the_set_is_big_enough_and_covers_every_kind_written_and_spoken() -> None:
    cases = CASES["mask"]
    assert len(cases) >= 100 and len(CASES["keep"]) >= 50
    assert {c["kind"] for c in cases} == set(KINDS)
    spoken = [c for c in cases if c.get("said") == "spoken"]
    assert len(spoken) >= 30
    for kind in ("card", "national_id", "pin", "security_code", "password", "dob"):
        assert any(c["kind"] == kind for c in spoken), kind


@pytest.mark.parametrize("case", CASES["mask"], ids=lambda c: f"{c['kind']}:{c['text'][:40]}")
def test_masked(case: dict[str, Any]) -> None:
    out = REDACTOR.redact_text(case["text"])
    for secret in case["gone"]:
        assert secret not in out, out
    assert case.get("mask", MASKS[case["kind"]]) in out, out


@pytest.mark.parametrize("text", CASES["keep"], ids=lambda t: t[:40])
def test_kept(text: str) -> None:
    assert REDACTOR.redact_text(text) == text
