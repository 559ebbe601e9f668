"""The embedded sample CRM: SQLite in the data directory, seeded with demo data on first open.

It stands in for a real CRM so every journey can be tried end to end (see the table of demo
customers in ``gateway/integrations/README.md``). Queries run on one worker thread; every call
is bounded by the timeout, and ``delay_seconds`` slows every call down on purpose so the
"CRM times out" path can be exercised for real.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from gateway.integrations.crm import (
    APPOINTMENT_STATUSES,
    Appointment,
    CrmError,
    CrmTimeout,
    Customer,
    Invoice,
    LoanApplication,
    Order,
    phone_digits,
)
from gateway.sqlite_tx import immediate, run_script, write

log = logging.getLogger(__name__)
T = TypeVar("T")

SEED_FILE = Path(__file__).with_name("sample_crm_seed.yaml")
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, phone TEXT NOT NULL,
    phone_digits TEXT NOT NULL, email TEXT NOT NULL, account_number TEXT NOT NULL UNIQUE,
    date_of_birth TEXT NOT NULL, pin TEXT NOT NULL, language TEXT NOT NULL, segment TEXT NOT NULL);
CREATE INDEX customers_phone ON customers (phone_digits);
CREATE TABLE orders (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,
    item TEXT NOT NULL, placed_on TEXT NOT NULL, eta TEXT, carrier TEXT NOT NULL, tracking TEXT NOT NULL);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE invoices (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, period TEXT NOT NULL,
    amount TEXT NOT NULL, status TEXT NOT NULL, disputed INTEGER NOT NULL, lines TEXT NOT NULL);
CREATE INDEX invoices_customer ON invoices (customer_id);
CREATE TABLE disputes (case_number INTEGER PRIMARY KEY AUTOINCREMENT, invoice_id TEXT NOT NULL,
    reason TEXT NOT NULL, opened_at TEXT NOT NULL);
CREATE TABLE appointments (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, kind TEXT NOT NULL,
    at TEXT NOT NULL, location TEXT NOT NULL, status TEXT NOT NULL);
CREATE INDEX appointments_at ON appointments (at);
CREATE TABLE loan_applications (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, product TEXT NOT NULL,
    amount TEXT NOT NULL, stage TEXT NOT NULL, missing TEXT NOT NULL, updated_on TEXT NOT NULL);
CREATE TABLE password_resets (reference TEXT PRIMARY KEY, customer_id TEXT NOT NULL, created_at TEXT NOT NULL);
INSERT INTO sqlite_sequence (name, seq) VALUES ('disputes', 700000);
"""
_LOAN_FIELDS = {"stage", "missing", "amount", "product"}


def _day(value: Any, today: date) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, int):
        return today + timedelta(days=value)
    return date.fromisoformat(str(value))


def _moment(value: Any, now: datetime) -> datetime:
    text = str(value).strip()
    match = re.fullmatch(r"([+-]\d+)d\s+(\d{1,2}):(\d{2})", text)
    if match:
        day = now.date() + timedelta(days=int(match.group(1)))
        return datetime(day.year, day.month, day.day, int(match.group(2)), int(match.group(3)))
    match = re.fullmatch(r"\+(\d+)h", text)
    if match:
        at = now.replace(second=0, microsecond=0) + timedelta(hours=int(match.group(1)))
        return at + timedelta(minutes=(-at.minute) % 15)
    return datetime.fromisoformat(text)


def _period(value: Any, today: date) -> str:
    if isinstance(value, int):
        month = today.year * 12 + today.month - 1 - value
        return f"{month // 12:04d}-{month % 12 + 1:02d}"
    return str(value)


def _seed(conn: sqlite3.Connection, seed_file: Path, now: datetime) -> None:
    data = yaml.safe_load(seed_file.read_text(encoding="utf-8")) or {}
    today = now.date()
    for c in data.get("customers", []):
        conn.execute(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (c["id"], c["name"], c["phone"], phone_digits(c["phone"]), c["email"], str(c["account_number"]),
             _day(c["date_of_birth"], today).isoformat(), str(c["pin"]),  # type: ignore[union-attr]
             c.get("language", "en"), c.get("segment", "standard")),
        )
    for o in data.get("orders", []):
        eta = _day(o.get("eta"), today)
        conn.execute(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (str(o["id"]), o["customer_id"], o["status"], o["item"], _day(o["placed_on"], today).isoformat(),  # type: ignore[union-attr]
             eta.isoformat() if eta else None, o.get("carrier", ""), str(o.get("tracking", ""))),
        )
    for i in data.get("invoices", []):
        lines = [[str(label), str(Decimal(str(amount)))] for label, amount in i["lines"]]
        amount = sum((Decimal(a) for _, a in lines), Decimal("0"))
        conn.execute(
            "INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?, ?)",
            (i["id"], i["customer_id"], _period(i["period"], today), str(amount), i["status"],
             int(bool(i.get("disputed", False))), json.dumps(lines)),
        )
    for a in data.get("appointments", []):
        conn.execute(
            "INSERT INTO appointments VALUES (?, ?, ?, ?, ?, ?)",
            (a["id"], a["customer_id"], a["kind"], _moment(a["at"], now).isoformat(), a["location"], a["status"]),
        )
    for loan in data.get("loan_applications", []):
        conn.execute(
            "INSERT INTO loan_applications VALUES (?, ?, ?, ?, ?, ?, ?)",
            (loan["id"], loan["customer_id"], loan["product"], str(Decimal(str(loan["amount"]))), loan["stage"],
             json.dumps(list(loan.get("missing", []))), _day(loan["updated_on"], today).isoformat()),  # type: ignore[union-attr]
        )


def _customer(row: sqlite3.Row) -> Customer:
    return Customer(id=row["id"], name=row["name"], phone=row["phone"], email=row["email"],
                    account_number=row["account_number"], date_of_birth=date.fromisoformat(row["date_of_birth"]),
                    pin=row["pin"], language=row["language"], segment=row["segment"])


def _order(row: sqlite3.Row) -> Order:
    return Order(id=row["id"], customer_id=row["customer_id"], status=row["status"], item=row["item"],
                 placed_on=date.fromisoformat(row["placed_on"]),
                 eta=date.fromisoformat(row["eta"]) if row["eta"] else None,
                 carrier=row["carrier"], tracking=row["tracking"])


def _invoice(row: sqlite3.Row) -> Invoice:
    lines = tuple((str(label), Decimal(amount)) for label, amount in json.loads(row["lines"]))
    return Invoice(id=row["id"], customer_id=row["customer_id"], period=row["period"],
                   amount=Decimal(row["amount"]), status=row["status"], disputed=bool(row["disputed"]), lines=lines)


def _appointment(row: sqlite3.Row) -> Appointment:
    return Appointment(id=row["id"], customer_id=row["customer_id"], kind=row["kind"],
                       at=datetime.fromisoformat(row["at"]), location=row["location"], status=row["status"])


def _loan(row: sqlite3.Row) -> LoanApplication:
    return LoanApplication(id=row["id"], customer_id=row["customer_id"], product=row["product"],
                           amount=Decimal(row["amount"]), stage=row["stage"],
                           missing=tuple(json.loads(row["missing"])), updated_on=date.fromisoformat(row["updated_on"]))


def _naive(at: datetime) -> datetime:
    """Wall-clock local time without tzinfo (how appointments are stored)."""
    return at.astimezone().replace(tzinfo=None) if at.tzinfo is not None else at


class SampleCrm:
    """:class:`~gateway.integrations.crm.Crm` on a SQLite file seeded with demo data."""

    def __init__(
        self,
        path: str | Path,
        *,
        timeout_seconds: float = 2.0,
        delay_seconds: float = 0.0,
        seed_file: str | Path = SEED_FILE,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.path = Path(path)
        self.timeout_seconds = timeout_seconds
        self.delay_seconds = delay_seconds
        self.now = now
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sample-crm")
        self._conn = self._open(Path(seed_file))

    def _open(self, seed_file: Path) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                with immediate(conn):
                    if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                        run_script(conn, _SCHEMA)
                        _seed(conn, seed_file, self.now())
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                log.info("sample CRM %s created and seeded from %s", self.path, seed_file.name)
            return conn
        except (OSError, sqlite3.Error, yaml.YAMLError, KeyError, ValueError) as exc:
            raise CrmError(
                f"sample CRM database {self.path} cannot be opened ({exc}); delete it to have it "
                "recreated with the demo data, or set crm.sqlite_path to another file"
            ) from exc

    async def _call(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        async def run() -> T:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            if self._conn is None:
                raise CrmError("sample CRM is closed")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._guard, what, fn)

        try:
            return await asyncio.wait_for(run(), self.timeout_seconds)
        except asyncio.TimeoutError:
            raise CrmTimeout(f"the CRM did not answer within {self.timeout_seconds:g} s ({what})") from None

    def _guard(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            raise CrmError(f"sample CRM failed while {what}: {exc}") from exc

    async def _one(self, what: str, sql: str, args: tuple[Any, ...]) -> sqlite3.Row | None:
        return await self._call(what, lambda conn: conn.execute(sql, args).fetchone())

    async def _all(self, what: str, sql: str, args: tuple[Any, ...]) -> list[sqlite3.Row]:
        return await self._call(what, lambda conn: conn.execute(sql, args).fetchall())

    # -- customers --------------------------------------------------------------------

    async def find_customer_by_phone(self, phone: str) -> Customer | None:
        digits = phone_digits(phone)
        if not digits:
            return None
        row = await self._one("finding a customer by phone", "SELECT * FROM customers WHERE phone_digits = ?", (digits,))
        return _customer(row) if row else None

    async def find_customer_by_account(self, account_number: str) -> Customer | None:
        account = re.sub(r"[\s-]", "", str(account_number))
        row = await self._one("finding a customer by account", "SELECT * FROM customers WHERE account_number = ?", (account,))
        return _customer(row) if row else None

    async def get_customer(self, customer_id: str) -> Customer | None:
        row = await self._one("reading a customer", "SELECT * FROM customers WHERE id = ?", (customer_id,))
        return _customer(row) if row else None

    async def verify_identity(
        self, account_number: str, *, date_of_birth: date | None = None, pin: str | None = None
    ) -> Customer | None:
        customer = await self.find_customer_by_account(account_number)
        if customer is None or (date_of_birth is None and not pin):
            return None
        if date_of_birth is not None and customer.date_of_birth != date_of_birth:
            return None
        if pin and not hmac.compare_digest(str(pin).strip().encode(), customer.pin.encode()):
            return None
        return customer

    async def send_password_reset(self, customer_id: str) -> str:
        reference = f"{secrets.randbelow(900000) + 100000}"

        def insert(conn: sqlite3.Connection) -> str:
            if conn.execute("SELECT 1 FROM customers WHERE id = ?", (customer_id,)).fetchone() is None:
                raise CrmError(f"no customer {customer_id!r}")
            conn.execute("INSERT INTO password_resets VALUES (?, ?, ?)",
                         (reference, customer_id, self.now().isoformat(timespec="seconds")))
            return reference

        return await self._call("sending a password reset", lambda conn: write(conn, insert))

    # -- orders and invoices ----------------------------------------------------------

    async def orders(self, customer_id: str) -> list[Order]:
        rows = await self._all("listing orders",
                               "SELECT * FROM orders WHERE customer_id = ? ORDER BY placed_on DESC, id", (customer_id,))
        return [_order(r) for r in rows]

    async def order(self, order_id: str) -> Order | None:
        row = await self._one("reading an order", "SELECT * FROM orders WHERE id = ?", (str(order_id).strip(),))
        return _order(row) if row else None

    async def invoices(self, customer_id: str) -> list[Invoice]:
        rows = await self._all("listing invoices",
                               "SELECT * FROM invoices WHERE customer_id = ? ORDER BY period DESC, id", (customer_id,))
        return [_invoice(r) for r in rows]

    async def open_dispute(self, invoice_id: str, reason: str) -> str:
        def dispute(conn: sqlite3.Connection) -> str:
            if conn.execute("SELECT 1 FROM invoices WHERE id = ?", (invoice_id,)).fetchone() is None:
                raise CrmError(f"no invoice {invoice_id!r} to dispute")
            row = conn.execute("SELECT case_number FROM disputes WHERE invoice_id = ?", (invoice_id,)).fetchone()
            if row is not None:
                return str(row[0])
            cur = conn.execute("INSERT INTO disputes (invoice_id, reason, opened_at) VALUES (?, ?, ?)",
                               (invoice_id, reason[:500], self.now().isoformat(timespec="seconds")))
            conn.execute("UPDATE invoices SET disputed = 1 WHERE id = ?", (invoice_id,))
            return str(cur.lastrowid)

        return await self._call("opening a dispute", lambda conn: write(conn, dispute))

    # -- appointments -----------------------------------------------------------------

    async def appointments(self, customer_id: str) -> list[Appointment]:
        rows = await self._all("listing appointments",
                               "SELECT * FROM appointments WHERE customer_id = ? ORDER BY at", (customer_id,))
        return [_appointment(r) for r in rows]

    async def _update_appointment(self, what: str, appointment_id: str, sql: str, args: tuple[Any, ...]) -> Appointment:
        def update(conn: sqlite3.Connection) -> sqlite3.Row:
            if conn.execute(sql, args + (appointment_id,)).rowcount != 1:
                raise CrmError(f"no appointment {appointment_id!r}")
            return conn.execute("SELECT * FROM appointments WHERE id = ?", (appointment_id,)).fetchone()

        return _appointment(await self._call(what, lambda conn: write(conn, update)))

    async def reschedule_appointment(self, appointment_id: str, new_at: datetime) -> Appointment:
        return await self._update_appointment(
            "rescheduling an appointment", appointment_id,
            "UPDATE appointments SET at = ?, status = 'confirmed' WHERE id = ?",
            (_naive(new_at).isoformat(timespec="minutes"),))

    async def set_appointment_status(self, appointment_id: str, status: str) -> Appointment:
        if status not in APPOINTMENT_STATUSES:
            raise CrmError(f"appointment status {status!r} is not one of {', '.join(APPOINTMENT_STATUSES)}")
        return await self._update_appointment("changing an appointment", appointment_id,
                                              "UPDATE appointments SET status = ? WHERE id = ?", (status,))

    async def due_reminders(self, now: datetime, horizon: timedelta) -> list[tuple[Customer, Appointment]]:
        start = _naive(now)
        rows = await self._all(
            "listing due reminders",
            "SELECT a.id AS a_id, a.customer_id, a.kind, a.at, a.location, a.status, c.* FROM appointments a"
            " JOIN customers c ON c.id = a.customer_id WHERE a.status = 'scheduled' AND a.at >= ? AND a.at <= ?"
            " ORDER BY a.at",
            (start.isoformat(), (start + horizon).isoformat()),
        )
        return [
            (_customer(r), Appointment(id=r["a_id"], customer_id=r["customer_id"], kind=r["kind"],
                                       at=datetime.fromisoformat(r["at"]), location=r["location"], status=r["status"]))
            for r in rows
        ]

    # -- loan applications ------------------------------------------------------------

    async def loan_applications(self, customer_id: str) -> list[LoanApplication]:
        rows = await self._all("listing loan applications",
                               "SELECT * FROM loan_applications WHERE customer_id = ? ORDER BY updated_on DESC",
                               (customer_id,))
        return [_loan(r) for r in rows]

    async def update_loan_application(self, app_id: str, **fields: Any) -> LoanApplication:
        unknown = set(fields) - _LOAN_FIELDS
        if unknown:
            raise CrmError(f"cannot change {', '.join(sorted(unknown))} of a loan application "
                           f"(changeable: {', '.join(sorted(_LOAN_FIELDS))})")
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "missing":
                values[name] = json.dumps([str(v) for v in value])
            elif name == "amount":
                values[name] = str(Decimal(str(value)))
            else:
                values[name] = str(value)
        values["updated_on"] = self.now().date().isoformat()

        def update(conn: sqlite3.Connection) -> sqlite3.Row:
            assignments = ", ".join(f"{name} = ?" for name in values)
            cur = conn.execute(f"UPDATE loan_applications SET {assignments} WHERE id = ?", (*values.values(), app_id))
            if cur.rowcount != 1:
                raise CrmError(f"no loan application {app_id!r}")
            return conn.execute("SELECT * FROM loan_applications WHERE id = ?", (app_id,)).fetchone()

        return _loan(await self._call("updating a loan application", lambda conn: write(conn, update)))

    async def close(self) -> None:
        """Release the database and the worker thread."""
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)
