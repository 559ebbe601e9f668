"""Proactive outreach: scheduled reminders that start by SMS and escalate to a call.

Each poll (``run_once(now)``) does two things, both deterministic for a given ``now``:

1. Reminders the CRM reports as due (``crm.due_reminders(now, horizon)``) and not yet started
   open an outbound conversation on ``sms`` (journey ``appointment`` unless the reminder names
   another) and get an SMS: the journey's reminder, "reply YES or NO", and a signed link that
   continues the same conversation in the web chat.
2. Started reminders with no answer after ``settings.outreach.escalate_after_minutes`` are
   escalated to a call: the conversation receives ``CallAccepted(channel="outreach")`` and the
   core emits ``Originate``, which the telephony sink carries out.

An answer is any customer activity on the conversation after the SMS, on any channel: an SMS
reply (YES, NO, CALL, anything), the link opened, a chat resumed. The customer can therefore
switch channel midway; replying CALL asks for the call at once. State lives in the outbox
database, so a restart neither repeats an SMS nor forgets an escalation.

A number on the do-not-call list gets no reminder and no call (state ``dnc``); the reminder
SMS takes from the core's outbound budgets like any other (:class:`OutboundPolicy`), starts with
the disclosure (the ``outbound_start`` journey) and ends with "Reply STOP to opt out".
:func:`open_reminder` and :func:`send_reminder` are shared with campaigns
(:mod:`gateway.digital.campaigns`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from gateway.config import Settings
from gateway.context.store import StoreError
from gateway.core.actions import Ask, Say
from gateway.core.compliance import OUTBOUND_START
from gateway.core.events import CallAccepted, CallStarted
from gateway.core.outbound import OutboundPolicy
from gateway.core.port import ConversationPort, Opened
from gateway.digital.followup import FollowUps
from gateway.digital.sms import SmsSender, SmsSendError, sms_session
from gateway.integrations.crm import Crm
from gateway.metrics import Metrics
from gateway.periodic import Periodic

log = logging.getLogger(__name__)

ANSWER_KINDS = {"ChatMessage", "UserSaid", "DtmfPressed", "LinkOpened", "FormSubmitted", "CallAccepted"}
REPLY_HINT = "Reply YES to confirm, NO to change, or CALL to talk to us."
OPT_OUT_HINT = "Reply STOP to opt out."


def _field(item: Any, *names: str, default: Any = "") -> Any:
    for name in names:
        value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
        if value not in (None, ""):
            return value
    return default


@dataclass(frozen=True)
class Reminder:
    """One reminder to send, whatever shape the CRM gave it in."""

    id: str
    customer_id: str
    phone: str
    text: str
    journey: str = "appointment"
    link_purpose: str = "chat"


def as_reminder(item: Any) -> Reminder:
    """A :class:`Reminder` from the CRM's ``(Customer, Appointment)`` pair or a mapping/object."""
    if isinstance(item, tuple) and len(item) == 2:
        customer, appointment = item
        first = str(_field(customer, "name")).split(" ")[0]
        at = _field(appointment, "at", default=None)
        when = at.strftime("%A %d %B at %H:%M") if isinstance(at, datetime) else str(at or "soon")
        where = _field(appointment, "location")
        text = (f"Hello {first}, a reminder of your {_field(appointment, 'kind', default='appointment')} "
                f"on {when}{' at ' + where if where else ''}.")
        return Reminder(id=str(_field(appointment, "id")), customer_id=str(_field(customer, "id")),
                        phone=str(_field(customer, "phone")), text=text)
    return Reminder(id=str(_field(item, "id", "reminder_id")), customer_id=str(_field(item, "customer_id")),
                    phone=str(_field(item, "phone", "mobile", "number", "to")), text=str(_field(item, "text", "message")),
                    journey=str(_field(item, "journey", default="appointment")),
                    link_purpose=str(_field(item, "link_purpose", default="chat")))


def _answers(context: dict[str, Any]) -> int:
    """How many customer turns the conversation's transcript holds (any channel)."""
    return sum(1 for line in context.get("transcript", [])
               if line.get("kind") in ANSWER_KINDS and line.get("channel") not in ("bot", "outreach"))


async def open_reminder(core: ConversationPort, *, customer_id: str, number: str, journey: str, ref: str) -> Opened:
    """Open the outbound SMS conversation of one reminder (nothing is sent yet). The gateway
    starts this contact: an outbound start, so the journey skips the identity check it would ask
    of an inbound stranger (it addresses the CRM's own number) and opens with the disclosure."""
    return await core.open("sms", customer_id=customer_id, caller_id=number, journey=journey,
                           session_id=sms_session(number),
                           event=CallStarted(channel="sms", caller_id=number, outbound=True, call_id=ref))


async def send_reminder(opened: Opened, *, number: str, text: str, link_purpose: str, sms: SmsSender,
                        followups: FollowUps, policy: OutboundPolicy, journey_words: bool = True) -> str:
    """Send the reminder SMS of ``opened``: the journey's own words when it has them (it knows
    the appointment) and ``journey_words``, else the disclosure and ``text``; a link that
    continues the conversation in the chat; how to answer and to opt out. '' when sent, else why
    not (a policy refusal's reason, ``send_failed``)."""
    cid = opened.conversation_id
    refusal = await policy.authorize("sms", cid, number)
    if refusal is not None:
        return refusal.reason
    said = [a for a in opened.actions if isinstance(a, (Say, Ask))]
    prompt = " ".join(a.text for a in said)
    disclosure = [a.text for a in said if a.prompt_id.startswith(OUTBOUND_START + ".")]
    if not journey_words or len(disclosure) == len(said):
        prompt = " ".join(disclosure + [text])
    link = followups.link_for(cid, link_purpose, to_phone_on_file=True)
    body = f"{prompt} {REPLY_HINT} Or continue in chat: {link} {OPT_OUT_HINT}".strip()
    try:
        await sms.send(number, body, conversation_id=cid)
    except SmsSendError:
        return "send_failed"
    return ""


class Outreach:
    """Runs reminders; ``clock`` returns the current time as an aware ``datetime``."""

    def __init__(self, settings: Settings, core: ConversationPort, crm: Crm, sms: SmsSender,
                 followups: FollowUps, metrics: Metrics, *, db_path: Path, policy: OutboundPolicy,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._settings = settings
        self._core = core
        self._policy = policy
        self._crm = crm
        self._sms = sms
        self._followups = followups
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outreach (reminder_id TEXT PRIMARY KEY, conversation_id TEXT,"
            " number TEXT, state TEXT, sent_at REAL, baseline INTEGER, updated_at REAL)"
        )
        self._ticker = Periodic("outreach", self.run_once, lambda: self._settings.outreach.poll_seconds,
                                expected=(OSError, LookupError, ValueError, sqlite3.Error))

    def state(self, reminder_id: str) -> dict[str, Any] | None:
        """The outreach record of one reminder (for tests and the CLI)."""
        with self._lock:
            row = self._db.execute("SELECT reminder_id, conversation_id, number, state, sent_at, baseline"
                                   " FROM outreach WHERE reminder_id = ?", (reminder_id,)).fetchone()
        if row is None:
            return None
        return dict(zip(("reminder_id", "conversation_id", "number", "state", "sent_at", "baseline"), row))

    def _set(self, reminder_id: str, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            self._db.execute(f"UPDATE outreach SET {cols}, updated_at = ? WHERE reminder_id = ?",
                             (*values.values(), self._clock().timestamp(), reminder_id))

    async def _due(self, now: datetime) -> list[Reminder]:
        due = await self._crm.due_reminders(now, timedelta(hours=self._settings.outreach.horizon_hours))
        return [as_reminder(item) for item in due]

    async def _number_of(self, reminder: Reminder) -> str:
        if reminder.phone or not reminder.customer_id:
            return reminder.phone
        customer = await self._crm.get_customer(reminder.customer_id)
        return str(_field(customer, "phone", "mobile")) if customer is not None else ""

    async def run_once(self, now: datetime | None = None) -> None:
        """Start due reminders and escalate unanswered ones, as of ``now``."""
        now = now or self._clock()
        for reminder in await self._due(now):
            await self._start(reminder, now)
        with self._lock:
            rows = self._db.execute("SELECT reminder_id, conversation_id, number, sent_at, baseline"
                                    " FROM outreach WHERE state = 'sms_sent'").fetchall()
        wait = self._settings.outreach.escalate_after_minutes * 60.0
        for reminder_id, cid, number, sent_at, baseline in rows:
            try:
                answered = _answers(await self._core.context(cid)) > baseline
            except LookupError:
                self._set(reminder_id, state="lost")
                continue
            if answered:
                self._set(reminder_id, state="answered")
                self._metrics.inc("voicegw_outreach_total", step="answered")
                log.info("reminder %s answered (conversation %s)", reminder_id, cid)
            elif now.timestamp() - sent_at >= wait:
                await self.escalate(reminder_id, cid, number)

    async def escalate(self, reminder_id: str, conversation_id: str, number: str) -> None:
        """Ask the core to call the customer now (the core emits Originate)."""
        if await self._listed(reminder_id, number) is not False:
            return
        self._set(reminder_id, state="escalated")
        await self._core.handle(conversation_id, CallAccepted(number=number, channel="outreach"))
        self._metrics.inc("voicegw_outreach_total", step="escalated")
        log.info("reminder %s unanswered: escalated to a call (conversation %s)", reminder_id, conversation_id)

    async def _start(self, reminder: Reminder, now: datetime) -> None:
        reminder_id = reminder.id
        if not reminder_id:
            return
        with self._lock:
            try:
                self._db.execute("INSERT INTO outreach (reminder_id, state, updated_at) VALUES (?, 'starting', ?)",
                                 (reminder_id, now.timestamp()))
            except sqlite3.IntegrityError:
                return  # already started (on this or an earlier run)
        number = await self._number_of(reminder)
        if not number:
            self._set(reminder_id, state="no_number")
            log.warning("reminder %s skipped: no phone number", reminder_id)
            return
        listed = await self._listed(reminder_id, number)
        if listed is None:
            with self._lock:  # not started after all: the next poll starts it when the list answers
                self._db.execute("DELETE FROM outreach WHERE reminder_id = ? AND state = 'starting'", (reminder_id,))
            return
        if listed:
            return
        opened = await open_reminder(self._core, customer_id=reminder.customer_id, number=number,
                                     journey=reminder.journey, ref=f"outreach-{reminder_id}")
        cid = opened.conversation_id
        baseline = _answers(await self._core.context(cid))
        why_not = await send_reminder(opened, number=number, text=reminder.text, link_purpose=reminder.link_purpose,
                                      sms=self._sms, followups=self._followups, policy=self._policy)
        if why_not:
            self._set(reminder_id, state="failed", conversation_id=cid, number=number)
            log.warning("reminder %s not sent (%s)", reminder_id, why_not)
            return
        self._set(reminder_id, state="sms_sent", conversation_id=cid, number=number,
                  sent_at=now.timestamp(), baseline=baseline)
        self._metrics.inc("voicegw_outreach_total", step="sms")
        log.info("reminder %s sent by sms to %s (conversation %s)", reminder_id, number, cid)

    async def _listed(self, reminder_id: str, number: str) -> bool | None:
        """True (and the reminder closed as ``dnc``) when ``number`` is on the do-not-call list;
        None when the list cannot be read (nothing is sent; a later poll tries again)."""
        try:
            listed = await self._policy.listed(number)
        except StoreError as exc:
            log.warning("reminder %s held: the do-not-call list cannot be read (%s)", reminder_id, exc)
            return None
        if listed:
            self._set(reminder_id, state="dnc")
            self._metrics.inc("voicegw_outreach_total", step="dnc")
            log.info("reminder %s: the number is on the do-not-call list; nothing sent", reminder_id)
        return listed

    async def on_sms_reply(self, number: str, conversation_id: str, text: str) -> None:
        """Inbound SMS listener: CALL switches to a call at once."""
        if text.strip().upper() != "CALL":
            return
        with self._lock:
            row = self._db.execute("SELECT reminder_id FROM outreach WHERE conversation_id = ? AND state = 'sms_sent'",
                                   (conversation_id,)).fetchone()
        if row is not None:
            self._set(row[0], state="answered")  # the SMS channel already fed CallAccepted

    def start(self) -> None:
        """Poll every ``settings.outreach.poll_seconds`` in the background."""
        self._ticker.start()

    async def close(self) -> None:
        """Stop polling; close the database."""
        await self._ticker.close()
        with self._lock:
            self._db.close()
