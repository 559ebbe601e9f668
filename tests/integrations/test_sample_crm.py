"""The embedded sample CRM on a real SQLite file: lookups, verification, changes, timeouts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import AsyncIterator

import pytest

from gateway.config import load_settings
from gateway.integrations.crm import CrmError, CrmTimeout, open_crm, phone_digits
from gateway.integrations.sample_crm import SampleCrm

SEEDED_AT = datetime(2026, 3, 2, 8, 10)  # a Monday morning


@pytest.fixture
async def crm(tmp_path: Path) -> AsyncIterator[SampleCrm]:
    crm = SampleCrm(tmp_path / "crm.db", now=lambda: SEEDED_AT)
    yield crm
    await crm.close()


@pytest.mark.parametrize("phone", ["+15551234567", "+1 555 123 4567", "555-123-4567", "(555) 123-4567", "15551234567"])
async def test_find_customer_by_phone_normalizes(crm: SampleCrm, phone: str) -> None:
    customer = await crm.find_customer_by_phone(phone)
    assert customer is not None and customer.name == "Alice Martin" and customer.id == "C001"


async def test_customer_lookups(crm: SampleCrm) -> None:
    alice = await crm.find_customer_by_account("12345678")
    assert alice is not None
    assert (alice.phone, alice.date_of_birth, alice.pin, alice.email) == (
        "+15551234567", date(1985, 3, 14), "4321", "alice.martin@example.com")
    assert await crm.get_customer("C001") == alice
    assert await crm.find_customer_by_account("1234 5678") == alice
    assert await crm.find_customer_by_phone("+15550000000") is None
    assert await crm.find_customer_by_phone("") is None
    assert await crm.get_customer("C999") is None
    carmen = await crm.get_customer("C003")
    assert carmen is not None and carmen.language == "es"
    assert phone_digits("+44 20 7946 0958") == "442079460958"


async def test_verify_identity(crm: SampleCrm) -> None:
    assert (await crm.verify_identity("12345678", date_of_birth=date(1985, 3, 14))).id == "C001"  # type: ignore[union-attr]
    assert (await crm.verify_identity("12345678", pin="4321")).id == "C001"  # type: ignore[union-attr]
    assert (await crm.verify_identity("12345678", date_of_birth=date(1985, 3, 14), pin="4321")) is not None
    assert await crm.verify_identity("12345678", date_of_birth=date(1985, 3, 15)) is None
    assert await crm.verify_identity("12345678", pin="1234") is None
    assert await crm.verify_identity("12345678", date_of_birth=date(1985, 3, 14), pin="0000") is None
    assert await crm.verify_identity("12345678") is None  # an account number alone proves nothing
    assert await crm.verify_identity("00000000", pin="4321") is None


async def test_orders_in_varied_states(crm: SampleCrm) -> None:
    orders = await crm.orders("C001")
    assert [o.id for o in orders] == ["10001", "10002"]
    shipped = orders[0]
    assert shipped.status == "shipped" and shipped.eta == date(2026, 3, 4) and shipped.carrier == "UPS"
    delayed = await crm.order("20001")
    assert delayed is not None and delayed.status == "delayed" and delayed.eta == date(2026, 3, 8)
    assert {o.status for o in await crm.orders("C004")} == {"processing", "shipped", "delivered"}
    cancelled = await crm.order("60001")
    assert cancelled is not None and cancelled.eta is None
    assert await crm.order("99999") is None


async def test_invoices_and_dispute(crm: SampleCrm) -> None:
    invoices = await crm.invoices("C001")
    assert [i.period for i in invoices] == ["2026-02", "2026-01"]
    latest = invoices[0]
    assert latest.amount == Decimal("99.97") and latest.status == "open" and not latest.disputed
    assert latest.lines.count(("Premium sports package", Decimal("19.99"))) == 2  # the duplicate charge
    case = await crm.open_dispute(latest.id, "charged twice for the sports package")
    assert case.isdigit() and len(case) == 6
    assert await crm.open_dispute(latest.id, "again") == case  # one case per invoice
    assert (await crm.invoices("C001"))[0].disputed
    other = await crm.open_dispute("INV-2001", "roaming")
    assert other != case
    with pytest.raises(CrmError, match="no invoice"):
        await crm.open_dispute("INV-0000", "x")


async def test_appointments_reminders_and_changes(crm: SampleCrm) -> None:
    due = await crm.due_reminders(SEEDED_AT, timedelta(days=2))
    assert [(c.name, a.id) for c, a in due] == [("Emma Schmidt", "A-5001"), ("Bob Nguyen", "A-2001")]
    emma_appt = due[0][1]
    assert emma_appt.at == datetime(2026, 3, 2, 11, 15)  # three hours after seeding, on a quarter hour
    assert [a.id for c, a in await crm.due_reminders(SEEDED_AT, timedelta(days=3))] == ["A-5001", "A-2001", "A-1001"]
    reminded = await crm.set_appointment_status("A-2001", "reminded")
    assert reminded.status == "reminded"
    assert [a.id for c, a in await crm.due_reminders(SEEDED_AT, timedelta(days=2))] == ["A-5001"]
    moved = await crm.reschedule_appointment("A-1001", datetime(2026, 3, 9, 14, 0))
    assert moved.at == datetime(2026, 3, 9, 14, 0) and moved.status == "confirmed"
    assert (await crm.appointments("C001"))[0] == moved
    with pytest.raises(CrmError, match="not one of"):
        await crm.set_appointment_status("A-1001", "maybe")
    with pytest.raises(CrmError, match="no appointment"):
        await crm.set_appointment_status("A-0000", "confirmed")


async def test_loan_application_stuck_with_missing_documents(crm: SampleCrm) -> None:
    (loan,) = await crm.loan_applications("C003")
    assert loan.stage == "documents" and loan.missing == ("proof of income", "a recent bank statement")
    assert loan.amount == Decimal("15000.00") and loan.updated_on == date(2026, 2, 23)
    updated = await crm.update_loan_application(loan.id, missing=["a recent bank statement"], amount="14000")
    assert updated.missing == ("a recent bank statement",) and updated.amount == Decimal("14000")
    assert updated.updated_on == date(2026, 3, 2)
    with pytest.raises(CrmError, match="cannot change"):
        await crm.update_loan_application(loan.id, customer_id="C001")
    with pytest.raises(CrmError, match="no loan application"):
        await crm.update_loan_application("L-0000", stage="approved")


async def test_password_reset_reference(crm: SampleCrm, tmp_path: Path) -> None:
    ref = await crm.send_password_reset("C005")
    assert ref.isdigit()
    with sqlite3.connect(tmp_path / "crm.db") as conn:
        assert conn.execute("SELECT customer_id FROM password_resets WHERE reference = ?", (ref,)).fetchone() == ("C005",)
    with pytest.raises(CrmError):
        await crm.send_password_reset("C999")


async def test_a_slow_crm_times_out(tmp_path: Path) -> None:
    slow = SampleCrm(tmp_path / "crm.db", timeout_seconds=0.2, delay_seconds=5.0)
    try:
        started = time.monotonic()
        with pytest.raises(CrmTimeout, match=r"did not answer within 0.2 s \(finding a customer by phone\)"):
            await slow.find_customer_by_phone("+15551234567")
        assert time.monotonic() - started < 4.5  # gave up at the timeout, not after the delay
        with pytest.raises(CrmTimeout):
            await slow.open_dispute("INV-1002", "x")
    finally:
        await slow.close()
    # the timed-out dispute was never written
    fast = SampleCrm(tmp_path / "crm.db")
    try:
        assert not (await fast.invoices("C001"))[0].disputed
    finally:
        await fast.close()


async def test_seeded_once_and_kept_across_restarts(tmp_path: Path) -> None:
    first = SampleCrm(tmp_path / "crm.db")
    await first.open_dispute("INV-1002", "dup")
    await first.close()
    second = SampleCrm(tmp_path / "crm.db")
    try:
        assert (await second.invoices("C001"))[0].disputed
        assert len(await second.orders("C001")) == 2
    finally:
        await second.close()


def test_open_crm_uses_the_data_dir_and_reports_a_broken_file(tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "crm": {"timeout_seconds": 1.5}})
    crm = open_crm(settings)
    assert isinstance(crm, SampleCrm) and crm.path == tmp_path / "data" / "crm.db" and crm.timeout_seconds == 1.5
    asyncio.run(crm.close())
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(CrmError, match="broken.db.*delete it"):
        SampleCrm(broken)
