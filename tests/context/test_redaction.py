"""Redaction of free text and payloads before they reach the event log."""

from __future__ import annotations

import pytest

from gateway.config import RedactionSettings
from gateway.context.redaction import Redactor, luhn_ok


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 please", "card [card ****1111] please"),
        ("4111-1111-1111-1111", "[card ****1111]"),
        ("amex 3782 822463 10005", "amex [card ****0005]"),
        ("digits one by one 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "digits one by one [card ****1111]"),
        ("card 4111111111111111 22 items", "card [card ****1111] 22 items"),
        ("not a card 4111111111111112", "not a card 4111111111111112"),  # fails Luhn
        ("account 12345678, order O1001, call +15551234567", "account 12345678, order O1001, call +15551234567"),
        ("ssn 078-05-1120 or 078 05 1120", "ssn [id] or [id]"),
        ("phone 555-123-4567", "phone 555-123-4567"),
        ("my PIN is 4321.", "my PIN is [pin]."),
        ("pin code: 4 3 2 1", "pin code: [pin]"),
        ("the password was 998877", "the password was [password]"),
        ("pinned 4321 items", "pinned 4321 items"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")


def test_sensitive_values_are_masked_however_they_were_said() -> None:
    r = Redactor()
    text = "it is 4321, 4-3-2-1, four three two one, Four, three, two, one; not 43210"
    assert r.redact_text(text, ["4321"]) == (
        "it is [redacted], [redacted], [redacted], [redacted]; not 43210"
    )
    assert r.redact_text("one oh five", ["105"]) == "[redacted]"
    assert r.redact_text("Mother's maiden name is O'Brien", ["o'brien"]) == "Mother's maiden name is [redacted]"
    assert r.redact_text("a b c", ["a"]) == "a b c"  # one-character values are not secrets to hunt


def test_payloads_are_redacted_recursively_without_touching_the_original() -> None:
    r = Redactor()
    payload = {
        "text": "my ssn 078-05-1120",
        "slots": {"pin": "4321", "dob": "1985-03-14", "code": 4321, "ok": True},
        "history": ["said 4321", {"passcode": 1234}],
        "sensitive": False,
    }
    out = r.redact_payload(payload, sensitive=["4321"])
    assert out == {
        "text": "my ssn [id]",
        "slots": {"pin": "[pin]", "dob": "[dob]", "code": "[redacted]", "ok": True},
        "history": ["said [redacted]", {"passcode": "[pin]"}],
        "sensitive": False,
    }
    assert payload["slots"]["pin"] == "4321"  # a copy was redacted
    marked = r.redact_payload({"text": "1985", "digits": "12", "kind": "answer", "sensitive": True})
    assert marked == {"text": "[redacted]", "digits": "[redacted]", "kind": "answer", "sensitive": True}
    named = r.redact_payload({"text": "hello", "answer": "blue", "sensitive": ["answer"]})
    assert named == {"text": "hello", "answer": "[redacted]", "sensitive": ["answer"]}


def test_each_kind_can_be_switched_off() -> None:
    r = Redactor(RedactionSettings(card_numbers=False, national_ids=False, pins=False))
    text = "card 4111 1111 1111 1111 ssn 078-05-1120 pin is 4321"
    assert r.redact_text(text) == text
    assert r.redact_payload({"pin": "4321"}) == {"pin": "4321"}
    assert r.redact_text(text, ["4321"]).endswith("pin is [redacted]")  # explicit values still masked


SAID = {
    "card_numbers": ("card 4111 1111 1111 1111", "[card ****1111]"),
    "national_ids": ("ssn 078-05-1120", "[id]"),
    "pins": ("my pin is 4321", "[pin]"),
    "security_codes": ("cvv 737", "[pin]"),
    "ibans": ("iban GB82 WEST 1234 5698 7654 32", "[iban]"),
    "passwords": ("my password is hunter2", "[password]"),
    "dates_of_birth": ("born on March 14 1985", "[dob]"),
}


@pytest.mark.parametrize("switch", sorted(SAID))
def test_one_switch_turns_off_one_kind_only(switch: str) -> None:
    text = "; ".join(said for said, _ in SAID.values())
    out = Redactor(RedactionSettings(**{switch: False})).redact_text(text)
    assert SAID[switch][0] in out
    for other, (said, mask) in SAID.items():
        if other != switch:
            assert said not in out and mask in out, other


def test_keys_that_name_a_secret_mask_their_value_whatever_it_looks_like() -> None:
    payload = {"cvv": "737", "password": "correct horse", "date_of_birth": "1985-03-14", "ssn": 78051120,
               "iban": "GB82WEST12345698765432", "otp": "482913", "note": "nothing here 1234"}
    assert Redactor().redact_payload(payload) == {
        "cvv": "[pin]", "password": "[password]", "date_of_birth": "[dob]", "ssn": "[id]", "iban": "[iban]",
        "otp": "[pin]", "note": "nothing here 1234"}
    off = Redactor(RedactionSettings(passwords=False, dates_of_birth=False)).redact_payload(payload)
    assert off["password"] == "correct horse" and off["date_of_birth"] == "1985-03-14" and off["cvv"] == "[pin]"


def test_an_iban_wins_over_the_card_like_digits_inside_it() -> None:
    # DE89 3704 0044 0532 0130 00: its digit groups alone would be read as a run of numbers
    assert Redactor().redact_text("DE89 3704 0044 0532 0130 00 and 4111 1111 1111 1111") == (
        "[iban] and [card ****1111]")


def test_a_card_number_after_its_name_is_masked_even_when_a_digit_was_misheard() -> None:
    r = Redactor()
    assert r.redact_text("my card number is four one one one one one one one one one one one one one one two") == (
        "my card number is [card ****1112]")
    assert r.redact_text("account number 4111 1111 1111 1112") == "account number 4111 1111 1111 1112"


def test_no_settings_masks_what_the_default_settings_mask() -> None:
    """``Redactor()`` (a SIP worker's log redaction, which does not load the settings models) and
    ``Redactor(RedactionSettings())`` mask the same: the settings' default is every kind on."""
    assert all(RedactionSettings().model_dump().values())
    texts = ["card 4111 1111 1111 1111", "my pin is 4321", "IBAN GB82 WEST 1234 5698 7654 32",
             "born on 12 March 1985", "cvv 123", "password hunter2", "ssn 123-45-6789"]
    payload = {"pin": "0000", "cvv": "999", "password": "x", "text": texts[0]}
    default, explicit = Redactor(), Redactor(RedactionSettings())
    assert [default.redact_text(t) for t in texts] == [explicit.redact_text(t) for t in texts]
    assert default.redact_payload(payload) == explicit.redact_payload(payload) != payload
    assert all(default.masks(kind) for kind in RedactionSettings.model_fields)
