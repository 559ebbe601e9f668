"""Contacts from CSV: one contact per row, checked row by row.

The header names the columns (any order, any case; unknown columns are ignored):

- ``phone`` (or ``number``, ``mobile``): required, E.164 (``+15551234567``); where the reminder
  SMS goes. Calls go to the number on file of ``customer_id`` only (the core's rule).
- ``id`` (or ``ref``, ``contact_id``): the contact's reference in the campaign, unique; the
  row number when absent. Importing the same id twice keeps the first.
- ``customer_id``: the CRM customer (needed for a call, and for the journey to know them).
- ``name``, ``tz`` (or ``timezone``: an IANA zone, else the campaign's), ``text`` (or
  ``message``: the reminder's words when the journey has none).

A row with a problem is reported with its line number and left out; the others are imported.
Bounded: at most :data:`MAX_ROWS` rows and :data:`MAX_FIELD_CHARS` per field (the csv
module's own field limit, 128 KiB, bounds what one cell may hold while it is read).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from gateway.core.outbound import e164
from gateway.digital.campaigns.model import Contact, zone

MAX_ROWS = 100_000
MAX_FIELD_CHARS = 500
"""A reminder's text is an SMS (160 to a few hundred characters); ids and names are shorter."""
MAX_ERRORS_REPORTED = 50
ALIASES = {
    "phone": ("phone", "number", "mobile", "phone_number"),
    "ref": ("id", "ref", "contact_id", "reference"),
    "customer_id": ("customer_id", "customer"),
    "name": ("name", "first_name"),
    "tz": ("tz", "timezone", "time_zone"),
    "text": ("text", "message", "reminder"),
}


@dataclass
class ParsedContacts:
    contacts: list[Contact] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rows: int = 0


def parse_contacts(campaign: str, text: str, *, max_rows: int = MAX_ROWS) -> ParsedContacts:
    """Parse CSV ``text`` into contacts of ``campaign``; ``ValueError`` when the file as a whole
    cannot be used (no header, no phone column, too many rows)."""
    result = ParsedContacts()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError("the CSV file is empty") from None
    except csv.Error as exc:
        raise ValueError(f"the CSV header cannot be read: {exc}") from None
    names = [h.strip().lower() for h in header]
    column: dict[str, int] = {}
    for key, aliases in ALIASES.items():
        for alias in aliases:
            if alias in names:
                column[key] = names.index(alias)
                break
    if "phone" not in column:
        raise ValueError(f"the CSV header needs a phone column (one of: {', '.join(ALIASES['phone'])})")
    seen: set[str] = set()
    line = 1
    try:
        for row in reader:
            line += 1
            if not any(cell.strip() for cell in row):
                continue
            result.rows += 1
            if result.rows > max_rows:
                raise ValueError(f"more than {max_rows} rows; split the file")
            problem, contact = _contact(campaign, row, column, line)
            if contact is not None and contact.ref in seen:
                problem, contact = f"line {line}: id {contact.ref!r} appears twice", None
            if problem:
                if len(result.errors) < MAX_ERRORS_REPORTED:
                    result.errors.append(problem)
                continue
            assert contact is not None
            seen.add(contact.ref)
            result.contacts.append(contact)
    except csv.Error as exc:
        raise ValueError(f"line {line}: not valid CSV ({exc})") from None
    return result


def _contact(campaign: str, row: list[str], column: dict[str, int], line: int) -> tuple[str, Contact | None]:
    def get(key: str) -> str:
        index = column.get(key)
        return row[index].strip() if index is not None and index < len(row) else ""

    values = {key: get(key) for key in ALIASES}
    for key, value in values.items():
        if len(value) > MAX_FIELD_CHARS:
            return f"line {line}: {key} is longer than {MAX_FIELD_CHARS} characters", None
    phone = e164(values["phone"])
    if not phone:
        return f"line {line}: {values['phone']!r} is not a full international number (+15551234567)", None
    if values["tz"]:
        try:
            zone(values["tz"])
        except ValueError as exc:
            return f"line {line}: {exc}", None
    ref = values["ref"] or f"row-{line}"
    return "", Contact(campaign=campaign, ref=ref[:64], phone=phone, customer_id=values["customer_id"][:64],
                       name=values["name"][:80], tz=values["tz"], text=values["text"])
