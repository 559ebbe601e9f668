"""The CRM as the gateway sees it: customers, orders, invoices, appointments, loan applications.

Journeys never talk to a CRM directly; they run lookups that call this interface. The embedded
sample CRM (``gateway.integrations.sample_crm``) implements it on SQLite with demo data; a
connector to a real CRM implements the same :class:`Crm` protocol and is chosen by
``settings.crm.backend``.

Every call is bounded by ``settings.crm.timeout_seconds``: a slower answer raises
:class:`CrmTimeout`, which the journey turns into an apology and an offer of an agent.

Datetimes (appointments) are naive wall-clock times of the business, as a scheduler shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.config import Settings

APPOINTMENT_STATUSES = ("scheduled", "reminded", "confirmed", "cancelled", "completed", "no_show")
"""``scheduled`` appointments are due for a reminder; outreach marks them ``reminded``."""


class CrmTimeout(RuntimeError):
    """The CRM did not answer within ``settings.crm.timeout_seconds``."""


class CrmError(RuntimeError):
    """The CRM refused or failed a request (unknown id, invalid change, unreadable database)."""


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    phone: str
    email: str
    account_number: str
    date_of_birth: date
    pin: str
    language: str = "en"
    segment: str = "standard"


@dataclass(frozen=True)
class Order:
    id: str
    customer_id: str
    status: str  # processing | shipped | delayed | delivered | cancelled
    item: str
    placed_on: date
    eta: date | None  # expected (or, once delivered, actual) delivery date
    carrier: str = ""
    tracking: str = ""


@dataclass(frozen=True)
class Invoice:
    id: str
    customer_id: str
    period: str  # "YYYY-MM": sorts in time order
    amount: Decimal
    status: str  # open | paid | overdue
    disputed: bool = False
    lines: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True)
class Appointment:
    id: str
    customer_id: str
    kind: str
    at: datetime  # naive local wall-clock time
    location: str
    status: str  # one of APPOINTMENT_STATUSES


@dataclass(frozen=True)
class LoanApplication:
    id: str
    customer_id: str
    product: str
    amount: Decimal
    stage: str  # e.g. application, documents, underwriting, approved
    missing: tuple[str, ...]
    updated_on: date


class Crm(Protocol):
    """What journeys and integrations need from a CRM. Every method is bounded by the timeout."""

    async def find_customer_by_phone(self, phone: str) -> Customer | None:
        """The customer with that phone number (``+1 555-123-4567`` and ``5551234567`` match)."""
        ...

    async def find_customer_by_account(self, account_number: str) -> Customer | None: ...

    async def get_customer(self, customer_id: str) -> Customer | None: ...

    async def verify_identity(
        self, account_number: str, *, date_of_birth: date | None = None, pin: str | None = None
    ) -> Customer | None:
        """The customer if the account exists and every factor given matches; None otherwise
        (also when no factor is given)."""
        ...

    async def orders(self, customer_id: str) -> list[Order]:
        """Newest first."""
        ...

    async def order(self, order_id: str) -> Order | None: ...

    async def invoices(self, customer_id: str) -> list[Invoice]:
        """Newest period first."""
        ...

    async def open_dispute(self, invoice_id: str, reason: str) -> str:
        """Open (or return the already open) dispute case; returns its case number."""
        ...

    async def appointments(self, customer_id: str) -> list[Appointment]:
        """In time order."""
        ...

    async def reschedule_appointment(self, appointment_id: str, new_at: datetime) -> Appointment: ...

    async def set_appointment_status(self, appointment_id: str, status: str) -> Appointment: ...

    async def loan_applications(self, customer_id: str) -> list[LoanApplication]: ...

    async def update_loan_application(self, app_id: str, **fields: Any) -> LoanApplication:
        """Change ``stage``, ``missing``, ``amount`` or ``product``; ``updated_on`` becomes today."""
        ...

    async def send_password_reset(self, customer_id: str) -> str:
        """Issue a password reset; returns its reference."""
        ...

    async def due_reminders(self, now: datetime, horizon: timedelta) -> list[tuple[Customer, Appointment]]:
        """``scheduled`` appointments between ``now`` and ``now + horizon``, soonest first."""
        ...


def phone_digits(phone: str) -> str:
    """Digits of a North American number with the country code: ``(555) 123-4567`` -> ``15551234567``.
    Other numbers keep their digits as given (``+44 20 ...`` -> ``4420...``)."""
    digits = re.sub(r"\D", "", phone or "")
    if len(digits) == 10:
        digits = "1" + digits
    return digits


def open_crm(settings: "Settings") -> Crm:
    """The CRM ``settings.crm.backend`` names (the embedded sample CRM by default)."""
    if settings.crm.backend == "sample":
        from gateway.integrations.sample_crm import SampleCrm

        return SampleCrm(settings.data_path(settings.crm.sqlite_path), timeout_seconds=settings.crm.timeout_seconds)
    raise CrmError(f"unknown CRM backend {settings.crm.backend!r}")
