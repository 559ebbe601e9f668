"""``voicegw erase --customer ID``: a customer's data out of every store, and a report of what went.

What is found: every conversation of the customer id, and every conversation whose caller id is
one of the customer's numbers (the number on file in the CRM, and any ``--phone`` given). What is
done, store by store:

- context store (SQLite or Redis): those conversations whole (records, event logs, feed entries,
  index entries), through the guarded purge;
- SMS outbox: their messages, every message to or from the numbers, threads, reminder records;
- used follow-up links, counters and locks (failed checks, codes sent, outbound counts),
  agent assignments;
- webhook dead letters and QA scores of those conversations;
- the audit log is *kept* (who read what stays answerable, under its own retention), but the
  customer id and numbers inside its entries are replaced by ``[erased]``.

The CRM is the system of record of the customer and is not touched (erase them there). The
erasure itself is written to the audit log with a keyed hash of the customer id (the id is not
kept; the same hash computed later answers "was this customer erased?").
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Settings
from gateway.context.recordings import erase_recordings
from gateway.context.audit import AuditLog
from gateway.context.lifecycle import LifecycleStore, PurgeCounts
from gateway.governance.side_stores import erase_redis, erase_sqlite
from gateway.links import load_or_create_secret

log = logging.getLogger(__name__)

NOT_TOUCHED = ("crm: the system of record keeps the customer; erase them there too",)


@dataclass
class ErasureReport:
    customer_ref: str
    conversations: list[str]
    numbers: list[str]
    stores: dict[str, dict[str, int]] = field(default_factory=dict)
    not_touched: tuple[str, ...] = NOT_TOUCHED

    def add(self, store: str, counts: PurgeCounts | dict[str, int]) -> None:
        data = counts.as_dict() if isinstance(counts, PurgeCounts) else dict(counts)
        self.stores[store] = {k: v for k, v in data.items() if v}

    def as_dict(self) -> dict[str, Any]:
        return {"customer_ref": self.customer_ref, "conversations": len(self.conversations),
                "numbers": len(self.numbers), "stores": self.stores, "not_touched": list(self.not_touched)}

    def text(self) -> str:
        lines = [f"erased {len(self.conversations)} conversation(s) and {len(self.numbers)} number(s) "
                 f"(customer ref {self.customer_ref}):"]
        for store, counts in self.stores.items():
            done = ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing held"
            lines.append(f"  {store}: {done}")
        lines += [f"  not touched: {item}" for item in self.not_touched]
        return "\n".join(lines)


def customer_ref(settings: Settings, customer_id: str) -> str:
    """A keyed hash of the customer id (the gateway's link secret is the key)."""
    secret = load_or_create_secret(settings.links.secret, settings.data_path("."))
    return hmac.new(secret, b"erasure:" + customer_id.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


async def numbers_of(settings: Settings, customer_id: str, given: list[str], crm: Any = None) -> list[str]:
    """The customer's number on file (when the CRM answers) and the numbers given."""
    numbers = [n for n in given if n]
    if crm is None:
        from gateway.integrations.crm import open_crm

        crm = open_crm(settings)
    try:
        customer = await crm.get_customer(customer_id)
    except Exception as exc:  # CrmTimeout/CrmError: erase what the id and the given numbers find
        log.warning("erasure: the CRM did not answer (%s); only the numbers given are searched", exc)
        customer = None
    if customer is not None and customer.phone:
        numbers.append(customer.phone)
    return list(dict.fromkeys(numbers))


async def erase_customer(settings: Settings, store: LifecycleStore, audit: AuditLog, *, customer_id: str,
                         numbers: list[str], actor: str, deliveries: Any = None, qa: Any = None) -> ErasureReport:
    """Erase ``customer_id`` (and conversations of ``numbers``) from every store; the report."""
    ids = await store.conversation_ids(customer_id=customer_id, caller_ids=numbers)
    report = ErasureReport(customer_ref(settings, customer_id), ids, numbers)
    report.add("conversations", await store.erase_conversations(ids, actor=actor, reason="erasure"))
    redis = settings.context.backend == "redis"
    report.add("sms outbox", erase_sqlite(settings.data_path("."), ids, numbers, customer_id, redis=True))
    report.add("call recordings", {"files": erase_recordings(settings.data_path("."), ids)})
    if redis:
        report.add("redis (links, counters, assignments)",
                   await erase_redis(settings.context.redis_url, ids, customer_id))
    else:
        report.add("links, counters, assignments",
                   erase_sqlite(settings.data_path("."), ids, [], customer_id, redis=False))
    if deliveries is not None:
        report.add("webhook dead letters", {"dead_letters": await deliveries.erase(ids)})
    if qa is not None:
        report.add("qa scores", {"scores": await qa.erase(ids)})
    needles = tuple(dict.fromkeys([customer_id] + numbers + [n.lstrip("+") for n in numbers]))
    scrubbed = await audit.scrub(ids, needles, actor=actor)  # type: ignore[attr-defined]
    report.add("audit log (kept; identifiers replaced)", {"entries_scrubbed": scrubbed})
    await audit.write(actor=actor, role="admin", action="erased",
                      detail={"customer_ref": report.customer_ref, "conversations": len(ids),
                              "stores": {k: sum(v.values()) for k, v in report.stores.items()}})
    log.info("erasure of customer ref %s: %d conversations", report.customer_ref, len(ids))
    return report
