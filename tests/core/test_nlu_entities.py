"""Entity parsers on real spoken and typed forms, including what must not be read as an entity."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from gateway.core.nlu.entities import (
    extract_digits,
    frustration_score,
    parse_amount,
    parse_date,
    parse_spelled,
    parse_yes_no,
)

TODAY = dt.date(2026, 11, 25)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my account is four five six seven", "4567"),
        ("double seven oh one", "7701"),
        ("triple two", "222"),
        ("twenty three", "23"),
        ("twenty three forty five", "2345"),
        ("nine oh two one oh", "90210"),
        ("zero zero seven", "007"),
        ("4 5 6", "456"),
        ("45 67", "4567"),
        ("it's 1234", "1234"),
        ("one two three for", "1234"),  # "four" heard as "for" at the end of a run
        ("eight six to one", "8621"),  # "two" heard as "to" inside a run
        ("oh one two", "012"),
        ("nineteen eighty five", "1985"),
        ("one hundred and twelve", "112"),
        ("Um, my PIN is, uh, 9-8-7-6", "9876"),
        ("four thousand", "4000"),
        ("one eight hundred five five five", "1800555"),
        ("four hundred twenty", "420"),
    ],
)
def test_extract_digits_spoken_forms(text: str, expected: str) -> None:
    assert extract_digits(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I'm calling for my order",
        "I want to talk to someone",
        "no one has helped me",
        "this one please",
        "oh I see",
        "",
    ],
)
def test_extract_digits_none_when_no_number_was_said(text: str) -> None:
    assert extract_digits(text) is None


@pytest.mark.parametrize(
    "text",
    ["yes", "yeah", "yep", "yup", "sure", "that's right", "correct", "Yes please", "uh huh", "mm hmm",
     "absolutely", "of course", "okay", "right, thanks", "sounds good", "go ahead", "that is correct",
     "yes it is", "I think so", "yeah sure why not", "no problem", "ok sure", "go on", "you got it",
     "I'd love that", "that's me"],
)
def test_yes_forms(text: str) -> None:
    assert parse_yes_no(text) is True


@pytest.mark.parametrize(
    "text",
    ["no", "nope", "nah", "not really", "no thanks", "No, thank you", "negative", "that's wrong",
     "that's not right", "absolutely not", "incorrect", "I don't think so", "no that's wrong",
     "no I want to talk to an agent", "I said no", "not correct"],
)
def test_no_forms(text: str) -> None:
    assert parse_yes_no(text) is False


@pytest.mark.parametrize(
    "text",
    ["I have no idea", "I don't know", "I'm not sure", "maybe", "what was the question",
     "there is no order", "correct my address please", "yeah no", "yes and no", "turn right", ""],
)
def test_neither_yes_nor_no(text: str) -> None:
    assert parse_yes_no(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("March third", dt.date(2027, 3, 3)),  # without a year: the next March 3rd
        ("the 3rd of March 1985", dt.date(1985, 3, 3)),
        ("March 3, 1985", dt.date(1985, 3, 3)),
        ("03/04/1985", dt.date(1985, 3, 4)),  # month first
        ("25/12/1990", dt.date(1990, 12, 25)),  # the first field cannot be a month
        ("1985-03-04", dt.date(1985, 3, 4)),
        ("tomorrow", dt.date(2026, 11, 26)),
        ("today", TODAY),
        ("the day after tomorrow", dt.date(2026, 11, 27)),
        ("next Tuesday", dt.date(2026, 12, 1)),
        ("um friday works", dt.date(2026, 11, 27)),
        ("wednesday", dt.date(2026, 12, 2)),  # a weekday named on that day means next week's
        ("third of march nineteen eighty five", dt.date(1985, 3, 3)),
        ("born on the twelfth of june eighty five", dt.date(1985, 6, 12)),
        ("july fourth two thousand and one", dt.date(2001, 7, 4)),
        ("march twenty first twenty twenty four", dt.date(2024, 3, 21)),
        ("december the twenty first", dt.date(2026, 12, 21)),
        ("on the fifth", dt.date(2026, 12, 5)),
        ("in two weeks", dt.date(2026, 12, 9)),
        ("a week from today", dt.date(2026, 12, 2)),
        ("three days from now", dt.date(2026, 11, 28)),
        ("oh three oh four nineteen eighty five", dt.date(1985, 3, 4)),  # read as MMDDYYYY digits
        ("My date of birth is March 3rd, 1985.", dt.date(1985, 3, 3)),
        ("It's the fourth of July, 1976.", dt.date(1976, 7, 4)),
        ("Jan 5th 2001", dt.date(2001, 1, 5)),
    ],
)
def test_parse_date(text: str, expected: dt.date | None) -> None:
    assert parse_date(text, today=TODAY) == expected


@pytest.mark.parametrize(
    "text",
    ["may I speak to someone", "my account is four five six seven", "one two three four", "hello", "March 1985",
     "12345678", "I was born in 1985"],
)
def test_parse_date_none(text: str) -> None:
    assert parse_date(text, today=TODAY) is None


def test_parse_date_rejects_impossible_dates() -> None:
    assert parse_date("the thirty first of february 1990", today=TODAY) is None
    assert parse_date("13/13/1990", today=TODAY) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("forty two dollars fifty", "42.50"),
        ("$42.50", "42.50"),
        ("forty two fifty", "42.50"),
        ("forty two dollars and five cents", "42.05"),
        ("fifty cents", "0.50"),
        ("a hundred and twenty dollars", "120.00"),
        ("42 dollars", "42.00"),
        ("$1,200", "1200.00"),
        ("twelve hundred bucks", "1200.00"),
        ("forty two point five", "42.50"),
        ("two hundred thirty four dollars and fifty six cents", "234.56"),
        ("I was charged 19.99 twice", "19.99"),
        ("two fifty", "2.50"),
        ("a dollar fifty", "1.50"),
        ("on account 12345 you charged me forty dollars", "40.00"),
        ("Forty-two dollars and fifty cents.", "42.50"),
    ],
)
def test_parse_amount(text: str, expected: str) -> None:
    assert parse_amount(text) == Decimal(expected)


@pytest.mark.parametrize(
    "text", ["I don't know the amount", "nothing", "", "five five five one two one two", "my code is A B 1 2 3"]
)
def test_parse_amount_none(text: str) -> None:
    assert parse_amount(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a as in alpha b c one two", "ABC12"),
        ("b for bravo", "B"),
        ("double t", "TT"),
        ("my name is smith s m i t h", "SMITH"),
        ("I think it's a b c", "ABC"),
        ("s w one a one a a", "SW1A1AA"),
        ("sierra tango x-ray", "STX"),
        ("c as in charlie a t", "CAT"),
        ("kilo lima mike four", "KLM4"),
        ("j o h n double n", "JOHNNN"),
        ("double u x", "WX"),
        ("b bee see dee", "BBCD"),  # letter names as a recogniser writes them
        ("the letters are b c", "BC"),
        ("it's b c are the letters", "BC"),
    ],
)
def test_parse_spelled(text: str, expected: str) -> None:
    assert parse_spelled(text) == expected


@pytest.mark.parametrize(
    "text",
    ["hello there", "I want a refund for two orders", "one two three", "I", "why are you calling", "see you", ""],
)
def test_parse_spelled_none(text: str) -> None:
    assert parse_spelled(text) is None


def test_frustration_calm_is_zero() -> None:
    assert frustration_score("hi, I'd like to check my order please") == 0.0
    assert frustration_score("") == 0.0


@pytest.mark.parametrize(
    "text",
    ["this is ridiculous", "this is the third time I'm calling", "you are useless", "what the hell",
     "I'm so fed up with this", "THIS IS NOT WHAT I ASKED FOR"],
)
def test_frustration_cues_score(text: str) -> None:
    assert frustration_score(text) >= 0.4


def test_frustration_grows_with_cues_and_stays_in_range() -> None:
    mild = frustration_score("this is annoying")
    strong = frustration_score("this is ridiculous, third time I call, you people are useless!!!")
    assert 0.0 < mild < strong <= 1.0
    assert frustration_score("F*** THIS, WHAT THE HELL IS WRONG WITH YOU, USELESS!!!") <= 1.0
