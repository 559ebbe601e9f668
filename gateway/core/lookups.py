"""Lookups: the named operations a journey step can ``run``, backed by the CRM.

Each lookup reads the conversation's slots, calls the CRM (bounded by its timeout) and returns
an outcome name that the step maps to its next step, plus slots to set. A CRM that fails or
times out gives the outcome ``error``; the journey then apologizes and offers an agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from gateway.context.store import StoreError
from gateway.core.nlu.entities import frustration_score
from gateway.core.trust import Assurance
from gateway.integrations.crm import Crm, CrmError, CrmTimeout, Customer

if TYPE_CHECKING:
    from gateway.core.actions import Action
    from gateway.core.dialog_state import DialogState
    from gateway.core.turn import Turn
    from gateway.core.verification import TrustServices

log = logging.getLogger(__name__)

COMPLEX_WORDS = ("lawyer", "legal", "fraud", "several", "multiple", "months", "cancel my account", "ombudsman")
DUPLICATE_WORDS = ("twice", "double", "duplicate", "two times", "charged again", "same charge")


@dataclass
class Outcome:
    name: str
    slots: dict[str, Any] = field(default_factory=dict)
    clear: tuple[str, ...] = ()
    verified: tuple[str, ...] = ()
    method: str = ""               # how ``verified`` was proven: knowledge, one_time_code, ...
    customer_id: str = ""
    actions: tuple["Action", ...] = ()   # actions the lookup asks for (a one-time code by SMS)


@dataclass
class LookupContext:
    crm: Crm
    slots: dict[str, Any]
    state: "DialogState"
    customer_id: str
    caller_id: str
    channel: str
    args: dict[str, Any]
    today: date
    turn: "Turn | None" = None
    services: "TrustServices | None" = None

    @property
    def assurance(self) -> Assurance:
        """The level the party on this channel session holds (NONE outside a turn)."""
        return self.turn.party.level if self.turn is not None else Assurance.NONE


Lookup = Callable[[LookupContext], Awaitable[Outcome]]


def spoken_digits(value: Any) -> str:
    """``"12345"`` -> ``"1 2 3 4 5"`` so a voice reads digits, not a number."""
    return " ".join(str(value))


def spoken_amount(amount: Decimal | float | str) -> str:
    amount = Decimal(str(amount)).quantize(Decimal("0.01"))
    dollars, cents = divmod(int(amount * 100), 100)
    out = f"{dollars} dollar{'s' if dollars != 1 else ''}"
    return out + (f" and {cents} cent{'s' if cents != 1 else ''}" if cents else "")


def money(amount: Decimal | float | str) -> str:
    return f"${Decimal(str(amount)).quantize(Decimal('0.01')):,}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def spoken_date(day: date) -> str:
    return f"{day.strftime('%A')}, {day.strftime('%B')} {_ordinal(day.day)}"


def spoken_datetime(at: datetime) -> str:
    hour = at.strftime("%I").lstrip("0")
    minute = "" if at.minute == 0 else at.strftime(":%M")
    return f"{spoken_date(at.date())} at {hour}{minute} {at.strftime('%p')}"


def customer_slots(customer: Customer) -> dict[str, Any]:
    return {
        "customer_name": customer.name,
        "customer_first_name": customer.name.split()[0],
        "phone_last4": customer.phone[-4:],
        "customer_phone": customer.phone,
        "customer_language": customer.language,
    }


async def identify_caller(ctx: LookupContext) -> Outcome:
    customer = None
    if ctx.customer_id:
        customer = await ctx.crm.get_customer(ctx.customer_id)
    elif ctx.caller_id:
        customer = await ctx.crm.find_customer_by_phone(ctx.caller_id)
    if customer is None:
        return Outcome("unknown")
    return Outcome("known", customer_slots(customer), customer_id=customer.id)


def _order_slots(order: Any) -> dict[str, Any]:
    status = order.status.lower()
    if status == "delivered":
        text = f"was delivered on {spoken_date(order.eta)}" if order.eta else "has been delivered"
    elif status == "delayed":
        text = f"is delayed; the new delivery date is {spoken_date(order.eta)}" if order.eta else "is delayed"
    elif status == "shipped":
        text = f"has shipped with {order.carrier} and should arrive on {spoken_date(order.eta)}" if order.eta else "has shipped"
    else:
        text = f"is {status}" + (f", expected on {spoken_date(order.eta)}" if order.eta else "")
    return {"order_id": order.id, "order_id_spoken": spoken_digits(order.id), "order_item": order.item,
            "order_status": order.status, "order_status_text": text, "order_tracking": order.tracking}


async def recent_order(ctx: LookupContext) -> Outcome:
    # a caller ID is only a claim: the orders of the customer it names are told to a party
    # that proved at least the phone on file; anyone else gives the order number
    if ctx.slots.get("order_id") or not ctx.customer_id or ctx.assurance < Assurance.PHONE:
        return Outcome("not_found")
    orders = [o for o in await ctx.crm.orders(ctx.customer_id) if o.status.lower() != "delivered"]
    if len(orders) != 1:
        return Outcome("not_found")
    return Outcome("found", _order_slots(orders[0]))


async def order_status(ctx: LookupContext) -> Outcome:
    order_id = str(ctx.slots.get("order_id", ""))
    order = await ctx.crm.order(order_id)
    if order is None or (ctx.customer_id and order.customer_id != ctx.customer_id):
        return Outcome("not_found", {"order_id_spoken": spoken_digits(order_id)}, clear=("order_id",))
    return Outcome("found", _order_slots(order))


def _month_name(period: str) -> str:
    """``"2026-10"`` -> ``"October 2026"`` (other forms are kept as they are)."""
    try:
        return datetime.strptime(period, "%Y-%m").strftime("%B %Y")
    except ValueError:
        return period


async def latest_invoice(ctx: LookupContext) -> Outcome:
    invoices = await ctx.crm.invoices(ctx.customer_id) if ctx.customer_id else []
    if not invoices:
        return Outcome("not_found")
    invoice = max(invoices, key=lambda inv: inv.period)
    return Outcome("found", {
        "invoice_id": invoice.id, "invoice_period": _month_name(invoice.period),
        "invoice_amount": money(invoice.amount), "invoice_amount_spoken": spoken_amount(invoice.amount),
    })


async def assess_billing_complaint(ctx: LookupContext) -> Outcome:
    raw = str(ctx.slots.get("complaint", ""))
    score = frustration_score(raw)
    complaint = raw.lower()
    ctx.state.heard_frustration(score)
    if score >= 0.5:
        return Outcome("frustrated", {"frustration": round(score, 2)})
    if any(word in complaint for word in COMPLEX_WORDS):
        return Outcome("complex")
    invoices = await ctx.crm.invoices(ctx.customer_id)
    invoice = next((inv for inv in invoices if inv.id == ctx.slots.get("invoice_id")), None)
    if invoice is not None:
        seen: dict[tuple[str, Decimal], int] = {}
        for line in invoice.lines:
            seen[line] = seen.get(line, 0) + 1
        dupes = [line for line, count in seen.items() if count > 1]
        if dupes and (any(w in complaint for w in DUPLICATE_WORDS) or "charge" in complaint or "wrong" in complaint):
            label, amount = dupes[0]
            return Outcome("duplicate", {"duplicate_line": label, "duplicate_amount": money(amount),
                                         "duplicate_amount_spoken": spoken_amount(amount)})
    return Outcome("other")


async def open_dispute(ctx: LookupContext) -> Outcome:
    reason = str(ctx.slots.get("complaint", "billing dispute"))
    case_id = await ctx.crm.open_dispute(str(ctx.slots.get("invoice_id", "")), reason)
    return Outcome("opened", {"case_id": case_id, "case_id_spoken": spoken_digits(case_id)})


async def send_password_reset(ctx: LookupContext) -> Outcome:
    reference = await ctx.crm.send_password_reset(ctx.customer_id)
    return Outcome("sent", {"reset_reference": reference})


async def loan_status(ctx: LookupContext) -> Outcome:
    apps = await ctx.crm.loan_applications(ctx.customer_id)
    if not apps:
        return Outcome("not_found")
    app = max(apps, key=lambda a: a.updated_on)
    slots = {"loan_id": app.id, "loan_product": app.product, "loan_amount": money(app.amount),
             "loan_amount_spoken": spoken_amount(app.amount), "loan_stage": app.stage,
             "loan_missing_text": " and ".join(app.missing) if app.missing else "nothing"}
    return Outcome("found" if app.missing else "complete", slots)


def _appointment_slots(appt: Any) -> dict[str, Any]:
    return {"appointment_id": appt.id, "appointment_kind": appt.kind, "appointment_location": appt.location,
            "appointment_when": spoken_datetime(appt.at), "appointment_at": appt.at.isoformat()}


async def next_appointment(ctx: LookupContext) -> Outcome:
    now = datetime.combine(ctx.today, time(0))
    upcoming = [a for a in await ctx.crm.appointments(ctx.customer_id)
                if a.at >= now and a.status.lower() not in ("cancelled", "completed")]
    if not upcoming:
        return Outcome("not_found")
    return Outcome("found", _appointment_slots(min(upcoming, key=lambda a: a.at)))


async def confirm_appointment(ctx: LookupContext) -> Outcome:
    appt = await ctx.crm.set_appointment_status(str(ctx.slots["appointment_id"]), "confirmed")
    return Outcome("confirmed", _appointment_slots(appt))


async def reschedule_appointment(ctx: LookupContext) -> Outcome:
    new_day = date.fromisoformat(str(ctx.slots["new_date"]))
    if new_day <= ctx.today:
        return Outcome("past", clear=("new_date",))
    old = datetime.fromisoformat(str(ctx.slots["appointment_at"]))
    appt = await ctx.crm.reschedule_appointment(str(ctx.slots["appointment_id"]),
                                                datetime.combine(new_day, old.time()))
    return Outcome("rescheduled", _appointment_slots(appt))


LOOKUPS: dict[str, Lookup] = {
    "identify_caller": identify_caller,
    "recent_order": recent_order,
    "order_status": order_status,
    "latest_invoice": latest_invoice,
    "assess_billing_complaint": assess_billing_complaint,
    "open_dispute": open_dispute,
    "send_password_reset": send_password_reset,
    "loan_status": loan_status,
    "next_appointment": next_appointment,
    "confirm_appointment": confirm_appointment,
    "reschedule_appointment": reschedule_appointment,
}


async def run_lookup(name: str, ctx: LookupContext) -> Outcome:
    """Run lookup ``name``; CRM failures and timeouts become the ``error`` outcome, and so do
    shared counters that cannot be read (a verification lockout or a send budget nobody can
    check refuses: the journey's ``error`` branch, never a check passed unchecked)."""
    from gateway.core.callbacks import CALLBACK_LOOKUPS
    from gateway.core.verification import VERIFICATION_LOOKUPS

    lookup = LOOKUPS.get(name) or VERIFICATION_LOOKUPS.get(name) or CALLBACK_LOOKUPS[name]
    try:
        return await lookup(ctx)
    except (CrmTimeout, CrmError, TimeoutError, StoreError) as exc:
        log.warning("lookup %s failed: %s", name, exc)
        return Outcome("error", {"error": str(exc) or type(exc).__name__})
